#!/usr/bin/env python3
"""A local stand-in for the two Stripe calls VMCloud makes (Checkout Sessions
and refunds), so `scripts/check-api` exercises the payment routes instead of
their "not configured" 503. Prints the port it listens on, then serves on
127.0.0.1 until killed."""

import itertools
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

counter = itertools.count(1)


class FakeStripe(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        n = next(counter)
        if self.path == "/v1/checkout/sessions":
            body = {"id": f"cs_test_{n}", "object": "checkout.session",
                    "url": f"https://checkout.stripe.test/c/pay/cs_test_{n}"}
        elif self.path == "/v1/refunds":
            body = {"id": f"re_test_{n}", "object": "refund", "status": "succeeded",
                    "amount": int(form.get("amount", "0") or 0)}
        else:
            self.answer(404, {"error": {"type": "invalid_request_error",
                                        "message": f"Unrecognized request URL ({self.path})."}})
            return
        self.answer(200, body)

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
print(server.server_address[1], flush=True)
server.serve_forever()
