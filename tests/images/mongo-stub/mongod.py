"""Listen on 27017 like mongod, and really store documents in /data/db.

A connection that starts with `STUB <command>\n` is one request of the
stand-in's own protocol (what mongotools speaks), answered then closed:

- `insert DB COLL` + a JSON document: stored (an `_id` already there is refused)
- `find DB COLL`: the collection's documents, as JSON
- `dump`: the whole store as an archive (a header line, then JSON), taken under
  the store's lock, so it is consistent even while inserts run
- `restore` or `restore drop` + an archive: its documents inserted (those whose
  `_id` is there already are kept, as mongorestore does), or with `drop` each
  collection of the archive replaced

Any other connection (RumiTalk's stand-in) is held open until the peer closes it.
Every change is written to /data/db/store.json atomically before it is answered.
"""

import json
import os
import socketserver
import threading

STORE = "/data/db/store.json"
ARCHIVE_HEADER = b"mongo-stub-archive 1\n"
_lock = threading.Lock()


def _load() -> dict:
    try:
        with open(STORE, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _save(store: dict) -> None:
    tmp = STORE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(store, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, STORE)


def _insert(store: dict, db: str, coll: str, doc: dict) -> bool:
    docs = store.setdefault(db, {}).setdefault(coll, [])
    if "_id" in doc and any(d.get("_id") == doc["_id"] for d in docs):
        return False
    docs.append(doc)
    return True


def handle(command: list[str], body: bytes) -> bytes:
    with _lock:
        store = _load()
        if command[0] == "insert":
            if not _insert(store, command[1], command[2], json.loads(body)):
                return b"error duplicate key\n"
            _save(store)
            return b"ok\n"
        if command[0] == "find":
            return json.dumps(store.get(command[1], {}).get(command[2], [])).encode()
        if command[0] == "dump":
            return ARCHIVE_HEADER + json.dumps(store, sort_keys=True).encode()
        if command[0] == "restore":
            if not body.startswith(ARCHIVE_HEADER):
                return b"error not an archive\n"
            archive = json.loads(body[len(ARCHIVE_HEADER):])
            count = 0
            for db, colls in archive.items():
                for coll, docs in colls.items():
                    if command[1:] == ["drop"]:
                        store.setdefault(db, {})[coll] = []
                    count += sum(_insert(store, db, coll, doc) for doc in docs)
            _save(store)
            return f"ok {count}\n".encode()
    return b"error unknown command\n"


class Connection(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        first = self.request.recv(65536)
        if not first.startswith(b"STUB "):
            print(f"connection from {self.client_address[0]}", flush=True)
            while self.request.recv(4096):
                pass
            return
        data = first
        while chunk := self.request.recv(65536):
            data += chunk
        line, _, body = data.partition(b"\n")
        command = line.decode().split()[1:]
        print(f"command {' '.join(command[:3])}", flush=True)
        self.request.sendall(handle(command, body))


os.makedirs(os.path.dirname(STORE), exist_ok=True)
server = socketserver.ThreadingTCPServer(("0.0.0.0", 27017), Connection)
server.daemon_threads = True
print("mongo-stub listening on 27017", flush=True)
server.serve_forever()
