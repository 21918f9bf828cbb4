"""`voicecall dial +15551234567`: place an outbound call through a running voicecall's REST API.

    voicecall dial +15551234567 --agent reminders --context '{"appointment": "Tuesday 10:00"}'

It POSTs `/api/calls` on the server of `--config` (or `--url`) with the bearer token from the
environment variable named by `server.api_token_env`, and prints the new call's SID.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from voicecall.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="voicecall dial", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("to", help="the number to call, E.164 (+15551234567)")
    p.add_argument("--agent", default="", help="agent profile to use (default: the default agent)")
    p.add_argument("--context", default="", help="JSON object the agent's prompt may use")
    p.add_argument("--config", default="configs/cpu.toml", help="config of the running server (default: %(default)s)")
    p.add_argument("--url", default="", help="server base URL (default: from the config's server.host and port)")
    p.add_argument("--json", action="store_true", help="print the API's whole answer as JSON")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    token = os.environ.get(cfg.server.api_token_env, "")
    if not token:
        print(f"voicecall dial: ${cfg.server.api_token_env} is not set (server.api_token_env): the API needs it",
              file=sys.stderr)
        return 2
    body: dict[str, object] = {"to": args.to}
    if args.agent:
        body["agent"] = args.agent
    if args.context:
        try:
            body["context"] = json.loads(args.context)
        except json.JSONDecodeError as exc:
            print(f"voicecall dial: --context is not JSON: {exc}", file=sys.stderr)
            return 2
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::", "") else cfg.server.host
    base = (args.url or f"http://{host}:{cfg.server.port}").rstrip("/")
    request = urllib.request.Request(base + "/api/calls", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError):
            detail = ""
        print(f"voicecall dial: HTTP {exc.code}: {detail or exc.reason}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"voicecall dial: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else answer.get("sid", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
