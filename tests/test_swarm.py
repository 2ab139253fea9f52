"""The Docker Swarm stack file (`rumistack render --swarm`): its structure, the
content-named configs and secrets, what it refuses, and the nginx config it
runs; `docker stack config` accepts it."""

import hashlib
import shutil
import subprocess

import pytest
import yaml
from dotenv import dotenv_values
from recording import RecordingVolumes
from rumistack import spec, swarm
from rumistack.appsettings import AppSettings
from rumistack.config import load_config
from rumistack.errors import ConfigError
from rumistack.layout import SWARM_SUBNET
from rumistack.render import TlsFacts, render, render_edge
from rumistack.secretstore import load_secrets
from rumistack.users import UserFile
from testenv import IN_CI

GOOD = "correct horse battery"


@pytest.fixture
def users(tmp_path):
    users = UserFile(tmp_path / "state" / "htpasswd")
    users.add("alice", GOOD)
    return users


def _config(tmp_path, **environ):
    return load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": str(tmp_path / "state"), **environ})


def _render(config, users, app=AppSettings(), version=(1, 22, 1)):
    volumes = RecordingVolumes(version=version)
    path = swarm.render_swarm(config, users, volumes, app).path
    return path, yaml.safe_load(path.read_text()), volumes


def test_every_service_of_the_swarm_stack_from_spec_with_its_role(tmp_path, users):
    config = _config(tmp_path, RUMISTACK_RUMITALK_REPLICAS="3")
    _, doc, _ = _render(config, users)
    names = [s.name for s in spec.services(config, load_secrets(config.state_dir), swarm=True)]
    assert list(doc["services"]) == names == ["mongodb", "redis", "rumitalk", "verifier", "nginx", "edge"]
    services = doc["services"]
    assert all(s["deploy"]["endpoint_mode"] == "dnsrr" and s["networks"] == ["default"] for s in services.values())
    assert doc["networks"]["default"]["driver"] == "overlay"
    # the subnet nginx believes the edge's PROXY protocol header from
    assert doc["networks"]["default"]["ipam"] == {"config": [{"subnet": SWARM_SUBNET}]}
    nginx, rumitalk, mongodb = services["nginx"], services["rumitalk"], services["mongodb"]
    # the edge holds the node's ports, replaced stop-first; nginx behind it holds none, replaced start-first
    edge = services["edge"]
    assert edge["deploy"]["mode"] == nginx["deploy"]["mode"] == "global"
    assert edge["deploy"]["placement"]["constraints"] == ["node.labels.rumistack.nginx == true"]
    assert nginx["deploy"]["placement"] == edge["deploy"]["placement"]
    assert [(p["target"], p["published"], p["mode"]) for p in edge["ports"]] == [(80, 8080, "host"), (443, 8443, "host")]
    assert "ports" not in nginx
    assert edge["deploy"]["update_config"]["order"] == "stop-first"
    assert nginx["deploy"]["update_config"]["order"] == nginx["deploy"]["rollback_config"]["order"] == "start-first"
    assert nginx["stop_signal"] == edge["stop_signal"] == "SIGQUIT"
    assert nginx["stop_grace_period"] == f"{config.stream_timeout}s" and "stop_grace_period" not in edge
    assert edge["read_only"] and edge["cap_drop"] == ["ALL"] and "secrets" not in edge
    assert rumitalk["deploy"]["replicas"] == 3
    assert rumitalk["deploy"]["update_config"]["order"] == "start-first"
    assert rumitalk["deploy"]["update_config"]["failure_action"] == "rollback"
    assert mongodb["deploy"]["replicas"] == 1
    assert mongodb["deploy"]["placement"]["constraints"] == ["node.labels.rumistack.mongodb == true"]
    assert mongodb["deploy"]["update_config"]["order"] == "stop-first"
    assert set(doc["volumes"]) == {"mongodb-data", "rumitalk-uploads", "rumitalk-images", "rumitalk-logs",
                                   "auth-verifier"}
    # the verifier beside every nginx, sharing the sockets' volume in the node's memory, and the user file
    verifier = services["verifier"]
    assert verifier["deploy"]["mode"] == "global"
    assert verifier["deploy"]["placement"] == nginx["deploy"]["placement"]
    assert verifier["deploy"]["update_config"]["order"] == "start-first"
    assert doc["volumes"]["auth-verifier"]["driver_opts"]["type"] == "tmpfs"
    assert "--fixed-user-file" in verifier["command"] and verifier["user"] == "102:101"
    assert [s["target"] for s in verifier["secrets"]] == [s["target"] for s in nginx["secrets"] if "users" in s["source"]]
    # hardened as on one host, but for no-new-privileges, which swarm services on engine 20.10 cannot set
    assert nginx["read_only"] and nginx["cap_drop"] == ["ALL"] and "CHOWN" in nginx["cap_add"]
    assert {v["target"] for v in nginx["volumes"] if v["type"] == "tmpfs"} == {"/run/rumistack", "/run/nginx"}


def test_an_outside_mongodb_means_no_mongodb_service(tmp_path, users):
    _, doc, _ = _render(_config(tmp_path, RUMISTACK_MONGO_URI="mongodb://db.example.com:27017/RumiTalk"), users)
    assert "mongodb" not in doc["services"] and "mongodb-data" not in doc["volumes"]


def test_configs_and_secrets_are_named_by_their_content_and_hold_it(tmp_path, users):
    config = _config(tmp_path)
    path, doc, _ = _render(config, users)
    files = render(config, TlsFacts(), swarm=True)
    for kind in ("configs", "secrets"):
        for key, obj in doc[kind].items():
            data = (path.parent / obj["file"]).read_bytes()
            assert key.endswith("-" + hashlib.sha256(data).hexdigest()[:16])
            assert obj["name"] == f"rumistack-{key}"
    nginx = doc["services"]["nginx"]
    by_target = {ref["target"]: ref["source"] for ref in nginx["configs"]}
    assert set(by_target) == {f"/etc/rumistack/nginx/{name}" for name in files}
    secrets = {ref["target"]: ref for ref in nginx["secrets"]}
    assert (path.parent / doc["secrets"][secrets["/rumistack-auth/htpasswd"]["source"]]["file"]).read_bytes() \
        == users.content()
    assert secrets["/rumistack-auth/htpasswd"]["gid"] == "101" and secrets["/rumistack-auth/htpasswd"]["mode"] == 0o440
    assert "/etc/rumistack/tls/cert.pem" in secrets
    (edge,) = doc["services"]["edge"]["configs"]
    assert edge["target"] == "/etc/rumistack/nginx/edge.conf" and edge["source"].startswith("edge-edge.conf-")


def test_rumitalks_environment_is_its_dotenv_secret_with_redis(tmp_path, users):
    config = _config(tmp_path)
    path, doc, _ = _render(config, users, AppSettings(variables=(("OPENAI_API_KEY", "sk-test-key"),)))
    rumitalk = doc["services"]["rumitalk"]
    assert "environment" not in rumitalk
    (ref,) = rumitalk["secrets"]
    assert ref["target"] == "/app/.env" and ref["uid"] == "1000" and ref["mode"] == 0o400
    env = dotenv_values(path.parent / doc["secrets"][ref["source"]]["file"])
    assert env["USE_REDIS"] == "true" and env["REDIS_URI"] == "redis://redis:6379"
    assert env["OPENAI_API_KEY"] == "sk-test-key"
    assert env["JWT_SECRET"] == load_secrets(config.state_dir)["JWT_SECRET"]


def test_no_secret_and_no_password_hash_in_the_stack_file(tmp_path, users):
    config = _config(tmp_path)
    path, _, _ = _render(config, users, AppSettings(variables=(("OPENAI_API_KEY", "sk-test-key"),)))
    text = path.read_text()
    assert "$2y$" not in text and "sk-test-key" not in text
    assert not [name for name, value in load_secrets(config.state_dir).items() if value in text]


def test_a_user_change_is_a_new_users_secret_and_nothing_else(tmp_path, users):
    config = _config(tmp_path)
    _, before, _ = _render(config, users)
    users.add("bob", GOOD)
    path, after, _ = _render(config, users)
    assert set(after["configs"]) == set(before["configs"])
    changed = set(after["secrets"]) ^ set(before["secrets"])
    assert len(changed) == 2 and all(key.startswith("users-") for key in changed)
    # the old file is gone: the directory holds what the stack names, no more
    assert {p.name for p in (path.parent / "files").iterdir()} == set(after["configs"]) | set(after["secrets"])


def test_the_edges_config_depends_on_the_ports_only_and_is_checked_by_nginx(tmp_path, users):
    config = _config(tmp_path)
    _, before, volumes = _render(config, users)
    assert [sorted(files) for files, _ in volumes.checked] == [sorted(render(config, swarm=True)), ["edge.conf"]]
    edge = render_edge(config)["edge.conf"]
    assert "proxy_pass $rumistack_nginx:443;" in edge and "proxy_protocol on;" in edge
    assert "include /etc/nginx/modules-enabled/*.conf;" in edge
    # a realm, a timeout, a user: new nginx configs and secrets, the edge's config the same
    users.add("bob", GOOD)
    changed = _config(tmp_path, RUMISTACK_REALM="Elsewhere", RUMISTACK_STREAM_TIMEOUT="60")
    _, after, _ = _render(changed, users)
    assert after["services"]["edge"] == before["services"]["edge"]
    assert after["services"]["nginx"]["configs"] != before["services"]["nginx"]["configs"]
    # plain http: the edge passes port 80 only
    plain = render_edge(_config(tmp_path, RUMISTACK_TLS="off"))["edge.conf"]
    assert "listen 80;" in plain and "443" not in plain


def test_nginx_on_a_swarm_takes_the_client_address_from_the_edge_only(tmp_path):
    config = _config(tmp_path)
    conf = render(config, TlsFacts(nginx_version=(1, 28, 0)), swarm=True)["nginx.conf"]
    assert "listen 443 ssl proxy_protocol default_server;" in conf
    assert "listen 80 proxy_protocol default_server;" in conf
    assert f"set_real_ip_from {SWARM_SUBNET};" in conf and "real_ip_header proxy_protocol;" in conf
    # the health check's listener stays plain
    assert "listen 127.0.0.1:8081;" in conf
    old = render(config, TlsFacts(nginx_version=(1, 22, 1)), swarm=True)["nginx.conf"]
    assert "listen 443 ssl http2 proxy_protocol default_server;" in old
    plain = render(_config(tmp_path, RUMISTACK_TLS="off"), swarm=True)["nginx.conf"]
    assert "listen 80 proxy_protocol default_server;" in plain
    for one_host in (render(config, TlsFacts(nginx_version=(1, 28, 0))), render(_config(tmp_path, RUMISTACK_TLS="off"))):
        assert "proxy_protocol" not in one_host["nginx.conf"] and "set_real_ip_from" not in one_host["nginx.conf"]


def test_the_summary_says_where_each_service_runs(tmp_path, users):
    config = _config(tmp_path)
    lines = swarm.summary(swarm.render_swarm(config, users, RecordingVolumes(version=(1, 22, 1)), AppSettings()))
    assert lines[-2:] == [
        "nginx      once on every node labelled rumistack.nginx=true; updated start-first",
        "edge       once on every node labelled rumistack.nginx=true, holding the node's ports 8080, 8443; "
        "updated stop-first"]
    assert "mongodb    1 task on the node labelled rumistack.mongodb=true; updated stop-first" in lines


def test_the_same_inputs_give_the_same_bytes(tmp_path, users):
    config = _config(tmp_path)
    first = _render(config, users)[0].read_bytes()
    assert _render(config, users)[0].read_bytes() == first


def test_the_nginx_config_is_checked_before_anything_is_written(tmp_path, users):
    config = _config(tmp_path)
    volumes = RecordingVolumes(version=(1, 22, 1))
    volumes.check = lambda files, others: (_ for _ in ()).throw(ConfigError("nginx refused it"))
    with pytest.raises(ConfigError, match="nginx refused it"):
        swarm.render_swarm(config, users, volumes, AppSettings())
    assert not swarm.stack_file(config).exists()


@pytest.mark.parametrize("environ, reason", [
    ({"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "chat.example.com"}, "RUMISTACK_TLS=acme is not for a swarm: the http-01"),
    ({"RUMISTACK_SEARCH": "true"}, "RUMISTACK_SEARCH=true is not for a swarm yet"),
    ({"RUMISTACK_BIND_ADDRESS": "127.0.0.1"}, "RUMISTACK_BIND_ADDRESS=127.0.0.1 is not for a swarm"),
    ({"RUMISTACK_TRUSTED_PROXIES": "192.0.2.0/24"}, "RUMISTACK_TRUSTED_PROXIES is not for a swarm yet: nginx there"),
])
def test_what_a_swarm_stack_does_not_do_is_refused_in_one_sentence_with_the_reason(tmp_path, users, environ, reason):
    with pytest.raises(ConfigError, match=reason) as refused:
        _render(_config(tmp_path, **environ), users)
    assert "\n" not in str(refused.value)


def test_a_new_service_in_spec_comes_along(tmp_path, users, monkeypatch):
    original = spec.services

    def more(*args, **kwargs):
        extra = spec.Service(name="verifier", image="example/verifier:1", healthcheck=spec.HealthCheck(("NONE",)),
                             mounts=(spec.Mount(spec.AUTH_VOLUME, "/auth", read_only=True),))
        return original(*args, **kwargs) + (extra,)

    monkeypatch.setattr(spec, "services", more)
    _, doc, _ = _render(_config(tmp_path), users)
    verifier = doc["services"]["verifier"]
    assert verifier["image"] == "example/verifier:1" and verifier["deploy"]["replicas"] == 1
    # the user file reaches it as the secret nginx has, where it mounts the auth volume
    assert [s["target"] for s in verifier["secrets"]] == ["/auth/htpasswd"]


def test_nginx_follows_rumitalks_tasks_by_dns_on_1_22_and_in_the_upstream_on_1_28(tmp_path):
    config = _config(tmp_path, RUMISTACK_STRICT_API="true")
    old = render(config, TlsFacts(nginx_version=(1, 22, 1)), swarm=True)
    conf = old["nginx.conf"]
    assert "resolver 127.0.0.11 valid=5s ipv6=off;" in conf and "upstream rumitalk" not in conf
    assert "proxy_pass http://$rumitalk_upstream;" in conf and "proxy_pass http://rumitalk" not in conf
    assert conf.count("rewrite ^ $uri break;") == sum(1 for e in config.exemptions)
    assert "proxy_pass http://$rumitalk_upstream/api/user;" in old["snippets/strict-api.conf"]
    assert '"~^(?<rumistack_resolved>/rumistack-auth/htpasswd)$"' in old["snippets/auth-verifier.conf"]
    new = render(config, TlsFacts(nginx_version=(1, 28, 0)), swarm=True)["nginx.conf"]
    assert "zone rumitalk 64k;" in new and "server rumitalk:3080 resolve;" in new and "$rumitalk_upstream" not in new
    single = render(config, TlsFacts(nginx_version=(1, 28, 0)))
    assert "resolver" not in single["nginx.conf"] and "server rumitalk:3080;" in single["nginx.conf"]
    assert "htpasswd-[0-9a-f]{16})$" in single["snippets/auth-verifier.conf"]


def test_docker_stack_config_takes_the_file_without_a_warning(tmp_path, users):
    docker = shutil.which("docker")
    if docker is None:
        if IN_CI:
            pytest.fail("no docker CLI to check the stack file with")
        pytest.skip("no docker CLI")
    config = _config(tmp_path, RUMISTACK_STRICT_API="true")
    app = AppSettings(config_yaml=b"version: 1.2.1\n")
    path, doc, _ = _render(config, users, app)
    result = subprocess.run([docker, "stack", "config", "-c", str(path)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    seen = yaml.safe_load(result.stdout)
    assert seen["services"]["rumitalk"]["deploy"]["replicas"] == 2
    assert {s["target"] for s in seen["services"]["rumitalk"]["secrets"]} == {
        "/app/.env", f"/app/config/{app.config_name}"}
    assert seen["services"]["edge"]["ports"][0]["mode"] == "host" and "ports" not in seen["services"]["nginx"]


def test_replicas_are_checked(tmp_path):
    for bad in ("0", "65", "two"):
        with pytest.raises(ConfigError, match="RUMISTACK_RUMITALK_REPLICAS"):
            _config(tmp_path, RUMISTACK_RUMITALK_REPLICAS=bad)
    assert _config(tmp_path, RUMISTACK_RUMITALK_REPLICAS="64").rumitalk_replicas == 64


def test_a_rollout_updates_a_service_only_once_what_it_depends_on_has_converged():
    depends_on = {"nginx": ("rumitalk", "verifier"), "edge": ("nginx",), "rumitalk": ("mongodb", "redis")}
    # a user change: the verifier first, so that no new nginx task asks a verifier with the old users
    assert swarm._waves(["nginx", "verifier"], depends_on) == [["verifier"], ["nginx"]]
    assert swarm._waves(["edge", "nginx", "rumitalk", "verifier"], depends_on) == [
        ["rumitalk", "verifier"], ["nginx"], ["edge"]]
    assert swarm._waves(["nginx"], depends_on) == [["nginx"]]  # what it depends on is not rolling
