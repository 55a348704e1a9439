#!/usr/bin/env python3
"""A small Matrix client for meshrelay's bridge tests: an ordinary user,
driven through matrix-nio's AsyncClient (no end-to-end encryption).

Run it with the test venv's python (`scripts/synapse.sh python`):

    PY=$(scripts/synapse.sh python)
    $PY scripts/matrix_client.py --homeserver URL --user alice [--password PW] \\
        [--timeout 60] COMMAND ...

    join ROOM                      wait for an invite (or an open room), join
                                   -> {"room_id": ...}
    messages ROOM --count N [--exact]
                                   wait until ROOM holds >= N m.room.message
                                   events (--exact: fail if > N after 2 s)
                                   -> {"messages": [{"event_id", "sender", "ts",
                                       "body", "mesh_event_id", "sender_name"}]}
    send ROOM TEXT                 -> {"event_id": ...}
    members ROOM                   -> {"members": [{"user_id", "display_name",
                                       "membership"}]}
    state ROOM                     -> {"name": ..., "topic": ..., "join_rule": ...}

ROOM is a room ID or an alias (#name:localhost). The password defaults to
`pw-USER`, the default of `scripts/synapse.sh register USER`. Every command
prints one JSON document on stdout and exits 0, or prints an error on stderr
and exits 1 (also when --timeout runs out, naming what it waited for).
"""

import argparse
import asyncio
import json
import logging
import sys

from nio import AsyncClient, AsyncClientConfig, ErrorResponse

# Content key under which the bridge stores the mesh event ID.
MESH_EVENT_ID_KEY = "org.meshrelay.event_id"
# Long-poll length of the /sync calls used to wait for something to happen.
POLL_MS = 2000


class Fail(Exception):
    """An error to report on stderr (exit 1)."""


class Ctx:
    """What the command is waiting for, and the last error seen meanwhile,
    so that a timeout can say what it gave up on."""

    waiting_for = "login"
    last_error = None


def ok(resp, what):
    """Returns resp, or raises Fail if the request failed."""
    if isinstance(resp, ErrorResponse):
        raise Fail(f"{what}: {resp.status_code or ''} {resp.message}".strip())
    return resp


async def resolve(client, room):
    """A room ID for ROOM (an ID, or an alias resolved by the server)."""
    if not room.startswith("#"):
        return room
    return ok(await client.room_resolve_alias(room), f"resolve {room}").room_id


async def wait_sync(client):
    """One /sync long poll (returns early when anything new arrives)."""
    return ok(await client.sync(timeout=POLL_MS), "sync")


async def room_state(client, room_id):
    """The room's current state events (raw dicts)."""
    return ok(await client.room_get_state(room_id), f"state of {room_id}").events


async def history(client, room_id, token):
    """Every event of the room up to the sync token `token`, oldest first,
    paginating /messages backwards until the start of the room."""
    events = []
    while token:
        resp = ok(
            await client.room_messages(room_id, start=token, limit=100),
            f"messages of {room_id}",
        )
        if not resp.chunk:
            break
        events.extend(e.source for e in resp.chunk)
        token = resp.end
    events.reverse()
    return events


def message_events(events):
    return [e for e in events if e.get("type") == "m.room.message"]


async def cmd_join(client, args, ctx):
    ctx.waiting_for = f"an invite to (or a joinable) {args.room}"
    while True:
        # Join by ID or alias; a failure (no invite yet, alias not created
        # yet) is retried after the next sync, which returns as soon as an
        # invite or anything else arrives.
        resp = await client.join(args.room)
        if not isinstance(resp, ErrorResponse):
            return {"room_id": resp.room_id}
        ctx.last_error = f"join: {resp.status_code} {resp.message}"
        sync = await wait_sync(client)
        if sync.rooms.invite:
            ctx.last_error += f" (invited to {sorted(sync.rooms.invite)})"


async def cmd_messages(client, args, ctx):
    room_id = await resolve(client, args.room)
    ctx.waiting_for = f"{args.count} m.room.message events in {args.room}"
    while True:
        # The sync token marks "now"; the history up to it is read in full.
        sync = await wait_sync(client)
        try:
            events = await history(client, room_id, sync.next_batch)
        except Fail as e:  # e.g. not joined yet: keep waiting
            ctx.last_error = str(e)
            continue
        msgs = message_events(events)
        ctx.last_error = f"{len(msgs)} so far"
        if len(msgs) >= args.count:
            break
    if args.exact:
        # Settle, then re-read everything to catch late duplicates.
        ctx.waiting_for = f"the --exact re-check of {args.room}"
        await asyncio.sleep(2)
        sync = await wait_sync(client)
        events = await history(client, room_id, sync.next_batch)
        msgs = message_events(events)
        if len(msgs) != args.count:
            raise Fail(
                f"expected exactly {args.count} messages in {args.room}, found "
                f"{len(msgs)}: {json.dumps([m.get('content', {}).get('body') for m in msgs])}"
            )
    # Display names: the current member state, else the last name the
    # history shows for that user (e.g. after the user left).
    names = {}
    for e in events:
        if e.get("type") == "m.room.member" and e.get("content", {}).get("displayname"):
            names[e["state_key"]] = e["content"]["displayname"]
    for e in await room_state(client, room_id):
        if e.get("type") == "m.room.member" and e.get("content", {}).get("displayname"):
            names[e["state_key"]] = e["content"]["displayname"]
    out = []
    for m in msgs:
        content = m.get("content", {})
        out.append({
            "event_id": m["event_id"],
            "sender": m["sender"],
            "ts": m.get("origin_server_ts"),
            "body": content.get("body"),
            "mesh_event_id": content.get(MESH_EVENT_ID_KEY),
            "sender_name": names.get(m["sender"]),
        })
    return {"messages": out}


async def cmd_send(client, args, ctx):
    room_id = await resolve(client, args.room)
    ctx.waiting_for = f"sending to {args.room}"
    content = {"msgtype": "m.text", "body": args.text}
    resp = ok(await client.room_send(room_id, "m.room.message", content), f"send to {args.room}")
    return {"event_id": resp.event_id}


async def cmd_members(client, args, ctx):
    room_id = await resolve(client, args.room)
    ctx.waiting_for = f"the members of {args.room}"
    members = [
        {
            "user_id": e["state_key"],
            "display_name": e.get("content", {}).get("displayname"),
            "membership": e.get("content", {}).get("membership"),
        }
        for e in await room_state(client, room_id)
        if e.get("type") == "m.room.member"
    ]
    return {"members": sorted(members, key=lambda m: m["user_id"])}


async def cmd_state(client, args, ctx):
    room_id = await resolve(client, args.room)
    ctx.waiting_for = f"the state of {args.room}"
    content = {
        e["type"]: e.get("content", {})
        for e in await room_state(client, room_id)
        if e.get("state_key") == ""
    }
    return {
        "name": content.get("m.room.name", {}).get("name"),
        "topic": content.get("m.room.topic", {}).get("topic"),
        "join_rule": content.get("m.room.join_rules", {}).get("join_rule"),
    }


async def run(args, ctx):
    user = args.user
    localpart = user[1:].split(":")[0] if user.startswith("@") else user
    # Requests are bounded by the overall --timeout, not by nio's retries.
    client = AsyncClient(args.homeserver, user, config=AsyncClientConfig())
    try:
        ok(await client.login(password=args.password or f"pw-{localpart}",
                              device_name="matrix_client.py"), f"login as {user}")
        return await args.func(client, args, ctx)
    finally:
        await client.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--homeserver", required=True, help="base URL, e.g. http://127.0.0.1:8008")
    p.add_argument("--user", required=True, help="localpart or @user:server")
    p.add_argument("--password", help="default: pw-LOCALPART")
    p.add_argument("--timeout", type=float, default=60, help="seconds (default 60)")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("join")
    c.add_argument("room")
    c.set_defaults(func=cmd_join)
    c = sub.add_parser("messages")
    c.add_argument("room")
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--exact", action="store_true")
    c.set_defaults(func=cmd_messages)
    c = sub.add_parser("send")
    c.add_argument("room")
    c.add_argument("text")
    c.set_defaults(func=cmd_send)
    for name, func in (("members", cmd_members), ("state", cmd_state)):
        c = sub.add_parser(name)
        c.add_argument("room")
        c.set_defaults(func=func)
    args = p.parse_args()

    # nio logs failed responses itself; the errors raised here say enough.
    logging.getLogger("nio").setLevel(logging.CRITICAL)
    ctx = Ctx()
    try:
        result = asyncio.run(asyncio.wait_for(run(args, ctx), args.timeout))
    except (asyncio.TimeoutError, TimeoutError):
        detail = f" (last: {ctx.last_error})" if ctx.last_error else ""
        print(f"matrix_client.py: timed out after {args.timeout:g} s waiting for "
              f"{ctx.waiting_for}{detail}", file=sys.stderr)
        sys.exit(1)
    except Fail as e:
        print(f"matrix_client.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
