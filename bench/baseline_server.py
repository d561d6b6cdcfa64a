"""The baseline for the intake benchmark: an aiohttp handler that parses JSON and does one Redis write."""

import json
import os
import sys
import uuid

from aiohttp import web
from redis.asyncio import Redis


async def handle(request: web.Request) -> web.Response:
    body = await request.json()
    key = f"baseline:{uuid.uuid4().hex}"
    await request.app["redis"].set(key, json.dumps(body))
    return web.json_response({"id": key}, status=201)


def main() -> None:
    app = web.Application()
    app["redis"] = Redis.from_url(os.environ["REDIS_URL"])
    app.router.add_post("/v1/requests", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
