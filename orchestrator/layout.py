"""The container layout: where each container of the stack finds what
rumistack puts there, and the command lines that depend on it.

Every module that names a path inside a container, or runs nginx, takes it
from here; nothing here imports the rest of rumistack.
"""

from __future__ import annotations

# nginx: its config volume, mounted read-only, and the file nginx runs with -c
CONF_DIR = "/etc/rumistack/nginx"
MAIN_FILE = "nginx.conf"
# the auth volume, read-only likewise; short on purpose: nginx resolves the
# user file link in it on every request, at one readlink a path component
AUTH_DIR = "/rumistack-auth"
USER_FILE = "htpasswd"  # in AUTH_DIR: a link to the current htpasswd-<hash> (volumes.EngineVolumes.publish_user_file)
# a tmpfs on the nginx container for the cache of verified credentials and
# the verifier's socket; nginx creates both inside it, so without it nginx
# does not start. In memory only: never on a disk
AUTH_TMPFS = "/run/rumistack"
AUTH_TMPFS_OPTIONS = "size=16m,mode=0755,noexec,nosuid,nodev"
# nginx's root filesystem is read-only: its pid file and temporary files
# (request bodies larger than its buffers, on their way to rumitalk) go to
# this tmpfs, in memory; nginx creates the subdirectories when it starts
NGINX_RUN_DIR = "/run/nginx"
NGINX_RUN_OPTIONS = "size=256m,mode=0755,noexec,nosuid,nodev"
# the tls volume, read-only in nginx: the chain, then the key, in one file
TLS_DIR = "/etc/rumistack/tls"
PEM_FILE = "cert.pem"
# the acme http-01 webroot volume (read-only in nginx) and certbot's own
# directory (the acme volume: account, certificates, renewal settings)
WEBROOT = "/var/lib/rumistack/acme-webroot"
ACME_CONFIG_DIR = "/etc/letsencrypt"
# certbot's root filesystem is read-only too: where else it writes (its work
# directory with its locks, its log files, temporary files) is tmpfs
CERTBOT_TMPFS = ("/var/lib/letsencrypt", "/var/log/letsencrypt", "/tmp")
CERTBOT_TMPFS_OPTIONS = "size=16m,mode=0755,noexec,nosuid,nodev"
# on nginx's loopback only: its health check and which config it has loaded
HEALTH_PORT = 8081
# RumiTalk, by its service name on the stack's network
UPSTREAM_HOST = "rumitalk"
UPSTREAM = f"{UPSTREAM_HOST}:3080"
NGINX_GID = 101  # the `nginx` group of the official images: its workers read the user file

# nginx with rumistack's complete config, and the check of that config
NGINX_RUN = ("nginx", "-c", f"{CONF_DIR}/{MAIN_FILE}", "-g", "daemon off;")
NGINX_TEST = ("nginx", "-t", "-q", "-c", f"{CONF_DIR}/{MAIN_FILE}")

# on a swarm: the edge, an nginx of its own on each node that takes traffic, holds the node's ports and
# passes each connection on to an nginx task (TCP, with the PROXY protocol). Its one config file is in its
# own container's CONF_DIR, checked like nginx's
EDGE_FILE = "edge.conf"
EDGE_RUN = ("nginx", "-c", f"{CONF_DIR}/{EDGE_FILE}", "-g", "daemon off;")
EDGE_TEST = ("nginx", "-t", "-q", "-c", f"{CONF_DIR}/{EDGE_FILE}")
EDGE_UPSTREAM = "nginx"  # nginx, by its service name on the stack's network: the edge passes connections to its tasks
# the stack's overlay network on a swarm: nginx believes the PROXY protocol's client address from these
# addresses only (the edge's tasks). Swarm hands out its default pool (10.0.0.0/8) in /24s from the bottom
# up, so another network of the swarm is unlikely to hold this one already
SWARM_SUBNET = "10.213.0.0/24"

# RumiTalk: its config volume (the YAML, read-only), and where its image
# writes its logs (its working directory's logs/)
RUMITALK_CONFIG_DIR = "/app/config"
RUMITALK_LOG_DIR = "/app/logs"
RUMITALK_UID = 1000  # the `node` user of RumiTalk's image: it reads its YAML
# RumiTalk reads this dotenv file itself, at start; on a swarm its environment is a secret there
RUMITALK_DOTENV = "/app/.env"

# the verifier (verifier.py): its sockets, shared with nginx, on a tmpfs volume only the two mount
# (spec.VERIFIER_VOLUME); its metrics on the stack's network only, never published
VERIFIER_DIR = "/run/rumistack-verifier"
VERIFY_SOCKET = f"{VERIFIER_DIR}/verify.sock"  # nginx asks it here
EVENTS_SOCKET = f"{VERIFIER_DIR}/events.sock"  # nginx's auth events (syslog), for the metrics
# the verifier's heartbeat: files in VERIFIER_DIR named by this prefix and the epoch second in decimal,
# which its event loop keeps for the previous, current and next second. nginx lets no credential in,
# cached ones neither, unless the file of its current second is there, so the door closes within two
# seconds of the verifier's death or hang (plain files, since nginx's open_file_cache opens what it
# looks for, and a socket cannot be opened)
VERIFIER_HEARTBEAT = "alive-"
VERIFIER_METRICS_PORT = 9100
VERIFIER_UID = 102  # its own user; in nginx's group, so it reads the user file and nginx reaches its sockets
VERIFIER_PROGRAM = ("/opt/verifier/bin/python", "/opt/verifier/verifier.py")  # verifier.Dockerfile installs it
VERIFIER_ARGS = ("--dir", VERIFIER_DIR, "--metrics", f"0.0.0.0:{VERIFIER_METRICS_PORT}")
