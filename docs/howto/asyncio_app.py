"""The bus inside a FastAPI app, and the asyncio client."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

import eventbus.asyncio
from eventbus import Connection, EventBus
from eventbus.asyncio import EmbeddedBus, run_bus

# [app]
bus = EventBus(open_rooms=True)


@bus.on("echo")
async def echo(sock: Connection, data: Any) -> Any:
    return data  # handlers run in trio, as under trio.run


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with run_bus(bus, "127.0.0.1", 0) as running:  # listening from here on
        app.state.bus = running
        yield
    # Here the bus has drained and closed its connections with 1001.


app = FastAPI(lifespan=lifespan)


@app.post("/notes")
async def add_note(note: dict[str, str], request: Request) -> dict[str, int]:
    running: EmbeddedBus = request.app.state.bus
    published = await running.publish("notes", "note", note)
    return {"seq": published.position.seq}
# [/app]


async def main() -> None:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no event for this
        await asyncio.sleep(0.01)
    http_port = server.servers[0].sockets[0].getsockname()[1]
    running: EmbeddedBus = app.state.bus

    # [client]
    async with eventbus.asyncio.connect(running.url) as client:
        print("echo:", await client.call("echo", "hi"))
        async with client.subscribe("notes") as notes:
            async with httpx.AsyncClient() as http:
                await http.post(f"http://127.0.0.1:{http_port}/notes", json={"text": "milk"})
            note = await anext(aiter(notes))
            print(f"note #{note.seq}: {note.data['text']}")
    # [/client]

    # [handle]
    async with eventbus.asyncio.connect(running.url) as worker:

        @worker.on("status")
        def status(data: Any) -> str:
            return "busy"

        await worker.join("workers")
        print("handed to", await running.emit("tick", 1, to="workers"), "connection")
        results = await running.call("status", to="workers", timeout=5)
        print("answers:", list(results.answers.values()))
        print("members:", len(await running.all_members("workers")))
    # [/handle]

    server.should_exit = True
    await serving


asyncio.run(main())
