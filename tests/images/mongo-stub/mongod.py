"""Listen on 27017 and hold each connection open until the peer closes it."""

import socketserver


class Hold(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        print(f"connection from {self.client_address[0]}", flush=True)
        while self.request.recv(4096):
            pass


server = socketserver.ThreadingTCPServer(("0.0.0.0", 27017), Hold)
server.daemon_threads = True
print("mongo-stub listening on 27017", flush=True)
server.serve_forever()
