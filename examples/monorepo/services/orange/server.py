"""orange: a small HTTP server on :8080."""

from http.server import BaseHTTPRequestHandler, HTTPServer

GREETING = b"orange: juicy\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"" if self.path == "/healthz" else GREETING
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    HTTPServer(("", 8080), Handler).serve_forever()
