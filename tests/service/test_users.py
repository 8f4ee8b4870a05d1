"""Users, tokens and levels (L15): admins add users, tokens are shown once and stored hashed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner, Result

from moot.service import create_app
from moot.service.cli import users_app
from store.fixtures import Database

from .helpers import ADMIN_TOKEN, LiveServer, make_settings, running_server, serve, unique

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_admin_adds_users_whose_token_is_shown_once_and_stored_hashed(
    shared_server: LiveServer,
) -> None:
    name = unique("ana")
    async with shared_server.client(ADMIN_TOKEN) as admin:
        created = await admin.post("/users", json={"name": name, "role": "member"})
        assert created.status_code == 201
        body = created.json()
        assert set(body) == {"id", "name", "role", "created_at", "token"}
        token = body["token"]
        total = (await admin.get("/users")).json()["total"]
        last = (await admin.get("/users", params={"limit": 1, "offset": total - 1})).json()
        assert (last["total"], last["limit"], last["offset"]) == (total, 1, total - 1)
        assert last["items"] == [{k: v for k, v in body.items() if k != "token"}]
        assert (await admin.get(f"/users/{body['id']}")).json()["name"] == name
    async with shared_server.client(token) as ana:
        me = (await ana.get("/users/me")).json()
        assert (me["name"], me["role"]) == (name, "member")
    engine = create_async_engine(shared_server.database.url, connect_args=shared_server.database.connect_args)
    try:
        async with engine.connect() as conn:
            hashes = (await conn.execute(text("SELECT token_hash FROM users"))).scalars().all()
    finally:
        await engine.dispose()
    assert token not in hashes
    assert all(h and len(h) == 64 for h in hashes)


async def test_a_token_in_the_query_works_and_a_bad_one_is_401_as_json(shared_server: LiveServer) -> None:
    name = unique("ana")
    token = await shared_server.new_user(name)
    async with shared_server.client() as anonymous:
        assert (await anonymous.get("/users/me", params={"token": token})).json()["name"] == name
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YTpi"}):
            answer = await anonymous.get("/rooms", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.json()["error"]["code"] == "unauthorized"
            assert "Bearer" in answer.json()["error"]["message"]


async def test_a_new_token_replaces_the_old_one(shared_server: LiveServer) -> None:
    old = await shared_server.new_user()
    async with shared_server.client(old) as ana:
        me = (await ana.get("/users/me")).json()
    async with shared_server.client(ADMIN_TOKEN) as admin:
        new = (await admin.post(f"/users/{me['id']}/token")).json()["token"]
    async with shared_server.client(old) as with_old, shared_server.client(new) as with_new:
        assert (await with_old.get("/users/me")).status_code == 401
        assert (await with_new.get("/users/me")).status_code == 200


async def test_only_admins_manage_users_L15(shared_server: LiveServer) -> None:
    # covers: L15
    member = await shared_server.new_user()
    async with shared_server.client(member) as ana:
        for method, path in (
            ("GET", "/users"),
            ("POST", "/users"),
            ("GET", "/users/1"),
            ("DELETE", "/users/1"),
        ):
            answer = await ana.request(method, path, json={"name": "x"} if method == "POST" else None)
            assert answer.status_code == 403, (method, path)
            assert answer.json()["error"]["message"] == (
                "your level is member; managing users takes the level admin or above"
            )


async def test_names_are_unique_and_the_last_admin_stays(shared_server: LiveServer) -> None:
    async with shared_server.client(ADMIN_TOKEN) as admin:
        me = (await admin.get("/users/me")).json()
        assert me["role"] == "admin"
        name = unique("ana")
        await admin.post("/users", json={"name": name})
        taken = await admin.post("/users", json={"name": name})
        assert taken.status_code == 409
        assert taken.json()["error"]["code"] == "name_taken"
        for answer in (
            await admin.patch(f"/users/{me['id']}", json={"role": "member"}),
            await admin.delete(f"/users/{me['id']}"),
        ):
            assert answer.status_code == 409
            assert "last admin" in answer.json()["error"]["message"]
        assert (await admin.get("/users/999")).status_code == 404


async def test_a_demoted_user_reads_but_cannot_write_L15(shared_server: LiveServer) -> None:
    # covers: L15
    token = await shared_server.new_user()
    async with shared_server.client(token) as ana, shared_server.client(ADMIN_TOKEN) as admin:
        room = (
            await ana.post("/rooms", json={"task": "t", "agents": [{"name": "A", "model": "simulated"}]})
        ).json()
        assert [a["permission"] for a in room["agents"]] == ["member"]
        me = (await ana.get("/users/me")).json()
        assert (await admin.patch(f"/users/{me['id']}", json={"role": "readonly"})).json()[
            "role"
        ] == "readonly"
        read = await ana.get(f"/rooms/{room['id']}")
        assert read.status_code == 200
        assert [a["permission"] for a in read.json()["agents"]] == ["readonly"]
        for path in ("run", "pause", "stop"):
            refused = await ana.post(f"/rooms/{room['id']}/{path}")
            assert refused.status_code == 403
            assert refused.json()["error"]["message"].startswith("your level is readonly")
        assert (await ana.post(f"/rooms/{room['id']}/messages", json={"text": "hi"})).status_code == 403
        assert (await ana.delete(f"/rooms/{room['id']}")).status_code == 403
        assert (await ana.post("/providers", json={"name": "p", "type": "openai"})).status_code == 403
        assert (await ana.post("/agents", json={"name": "A"})).status_code == 403
        assert (await ana.get(f"/rooms/{room['id']}/messages")).status_code == 200


async def test_deleting_a_user_keeps_their_rooms_without_an_owner(shared_server: LiveServer) -> None:
    token = await shared_server.new_user()
    async with shared_server.client(token) as ana, shared_server.client(ADMIN_TOKEN) as admin:
        task = {"task": "t", "agents": [{"name": "A", "model": "simulated"}]}
        room = (await ana.post("/rooms", json=task)).json()
        me = (await ana.get("/users/me")).json()
        assert (await admin.delete(f"/users/{me['id']}")).status_code == 204
        assert (await ana.get("/users/me")).status_code == 401
        assert (await admin.get(f"/rooms/{room['id']}")).status_code == 404  # nobody's now
    async with asyncio.timeout(5):
        assert (await shared_server.app.state.store.get_room(room["id"])).owner_id is None


async def test_the_first_start_creates_an_admin_and_prints_a_login_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, admin_token=None, database_url=f"sqlite:///{tmp_path / 'moot.db'}")
    _url, stop = await serve(create_app(settings))
    await stop()
    first = capsys.readouterr().err
    assert "created the admin; sign in at http://127.0.0.1:8000/login?token=moot_" in first
    _url, stop = await serve(create_app(settings))
    await stop()
    assert "an admin exists; `moot users token admin` prints a new token" in capsys.readouterr().err


async def test_users_add_and_token_commands_print_working_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'moot.db'}"
    monkeypatch.setenv("MOOT_DATABASE_URL", url)
    runner = CliRunner()

    async def moot_users(*args: str) -> Result:
        return await asyncio.to_thread(runner.invoke, users_app, list(args))  # it runs its own event loop

    added = await moot_users("add", "ana", "--role", "readonly")
    assert added.exit_code == 0, added.output
    assert "added ana (readonly)" in added.output
    again = await moot_users("add", "ana")
    assert again.exit_code == 1
    assert "already exists" in again.output
    renewed = await moot_users("token", "ana")
    assert renewed.exit_code == 0
    token = renewed.output.splitlines()[-1]
    async with running_server(Database(url), make_settings(tmp_path)) as live, live.client(token) as ana:
        assert (await ana.get("/users/me")).json()["role"] == "readonly"
    with_url = await moot_users("token", "ana", "--url")
    assert with_url.output.splitlines()[-1].startswith("http://127.0.0.1:8000/login?token=moot_")
    missing = await moot_users("token", "bob")
    assert missing.exit_code == 1
    assert "moot users add bob" in missing.output
    assert (await moot_users("add", "bob", "--role", "king")).exit_code == 2
    bad_name = await moot_users("add", "two words")
    assert bad_name.exit_code == 2
    assert "name: String should match pattern" in bad_name.output
