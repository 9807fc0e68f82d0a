"""A minimal Hugging Face Hub on 127.0.0.1 for push/pull tests: repo creation, preupload (every file "regular"),
NDJSON commits (files written under `root/<namespace>/<name>/`) and `resolve` downloads. Enough for
HfApi.upload_folder and for from_pretrained / pipeline with HF_ENDPOINT pointing here."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    commits: list[str] = []  # repo of each commit; its count numbers the commit ids

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def resolve(self, send_body: bool) -> None:
            parts = self.path.split("?")[0].split("/")  # /<ns>/<name>/resolve/<revision>/<path...>
            if len(parts) < 6 or parts[3] != "resolve":
                return self.reply(404, {"error": f"not found: {self.path}"})
            target = root / parts[1] / parts[2] / "/".join(parts[5:])
            if not target.is_file():
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Error-Message", "Entry not found")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = target.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", f"{len(commits):040d}")
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self.resolve(send_body=False)

        def do_GET(self) -> None:
            if self.path.startswith("/api/whoami"):
                return self.reply(200, {"name": "tester", "type": "user", "orgs": [], "auth": {}})
            self.resolve(send_body=True)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path.split("?")[0]
            if path == "/api/repos/create":
                request = json.loads(body)
                name = f"{request.get('organization') or 'tester'}/{request['name']}"
                (root / name).mkdir(parents=True, exist_ok=True)
                return self.reply(200, {"url": f"http://{self.headers['Host']}/{name}", "name": name})
            if path == "/api/validate-yaml":  # the model card's metadata header must at least be YAML
                import yaml

                content = json.loads(body)["content"]
                header = content.split("---")[1] if content.startswith("---") else ""
                try:
                    yaml.safe_load(header)
                except yaml.YAMLError as error:
                    return self.reply(400, {"error": str(error)})
                return self.reply(200, {"errors": [], "warnings": []})
            parts = path.split("/")  # /api/models/<ns>/<name>/<action>/<revision>
            if len(parts) >= 7 and parts[1] == "api" and parts[5] == "preupload":
                files = json.loads(body)["files"]
                return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                   "oid": None} for f in files]})
            if len(parts) >= 7 and parts[1] == "api" and parts[5] == "commit":
                repo = root / parts[3] / parts[4]
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item.get("key") == "file":
                        target = repo / item["value"]["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(base64.b64decode(item["value"]["content"]))
                commits.append(f"{parts[3]}/{parts[4]}")
                oid = f"{len(commits):040d}"
                return self.reply(200, {"commitUrl": f"http://{self.headers['Host']}/{parts[3]}/{parts[4]}/commit/{oid}",
                                        "commitOid": oid, "success": True})
            self.reply(404, {"error": f"not found: {self.path}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
