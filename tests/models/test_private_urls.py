"""Private addresses refused as each connection opens, on every transport; redirects never followed.

Each refusal is shown against a fake server that the same request reaches when the guard is off (or while
the name resolves to a public address): the server seeing nothing is the guard's doing, not a dead URL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable

import pytest

from moot.exceptions import ModelError
from moot.models import Message, Model, ModelRequest
from moot.models._guard import NetworkRefused, refused_reason, using_network
from moot.spec import ModelSpec
from moot.testing.network import FakeNetwork, Redirector
from moot.testing.servers import FakeLLMServer

from .conftest import KEY, Collect

REQUEST = ModelRequest(system="You are Ada.", messages=(Message("user", "Ship it?"),), max_tokens=5)
TRANSPORTS = [("openai", "lean"), ("openai", "sdk"), ("anthropic", "lean")]
PUBLIC = "1.2.3.4"  # what the fake network resolves "public" names to, routed to the loopback fake server
CANARY = "sk-canary-redirect-0123456789"
MakeModel = Callable[[ModelSpec], Model]

REFUSED = [
    "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "100.64.0.1", "224.0.0.1", "ff02::1",
    "240.0.0.1", "255.255.255.255", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "::7f00:1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a00:1::1", "2001::1",
    "192.0.2.1", "2001:db8::1",
]  # fmt: skip
ALLOWED = ["1.2.3.4", "8.8.8.8", "2606:4700::1111", "::ffff:1.2.3.4", "64:ff9b::102:304", "2002:102:304::1"]


def test_hardening_2_every_private_address_form_is_refused_and_public_ones_are_not() -> None:
    assert [a for a in REFUSED if refused_reason(ipaddress.ip_address(a)) is None] == []
    assert [a for a in ALLOWED if refused_reason(ipaddress.ip_address(a)) is not None] == []


def spec_for(provider: str, transport: str, url: str, *, guarded: bool) -> ModelSpec:
    """A model on `url` (OpenAI's /v1 added), refusing private addresses when `guarded`; no retries."""
    base_url = url + "/v1" if provider == "openai" else url
    spec = ModelSpec.model_validate(
        {
            "provider": provider,
            "model": "fake-model",
            "transport": transport,
            "base_url": base_url,
            "api_key": KEY,
            "timeout": 10,
            "max_retries": 0,
        }
    )
    if guarded:
        spec.refuse_private_addresses()
    return spec


async def refusal_of(model: Model) -> ModelError:
    with pytest.raises(ModelError) as caught:
        async for _ in model.stream(REQUEST):
            pass
    return caught.value


@pytest.fixture
async def server6() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(api_key=KEY, host="::1") as fake:
        yield fake


@pytest.mark.parametrize(("provider", "transport"), TRANSPORTS)
@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f.1",
        "0177.1",
        "0x7f000001",
        "127.1",
        "[::1]",
    ],
)
async def test_hardening_2_a_loopback_server_is_out_of_reach_in_any_spelling(
    provider: str,
    transport: str,
    host: str,
    server: FakeLLMServer,
    server6: FakeLLMServer,
    make_model: MakeModel,
    collect: Collect,
) -> None:
    fake = server6 if host == "[::1]" else server
    url = f"http://{host}:{fake.port}"
    _, completion = await collect(make_model(spec_for(provider, transport, url, guarded=False)), REQUEST)
    assert completion.text and len(fake.requests) == 1  # this spelling reaches the server...

    refused = await refusal_of(make_model(spec_for(provider, transport, url, guarded=True)))
    assert isinstance(refused, NetworkRefused) and not refused.retryable
    assert "a loopback address" in str(refused) and "MOOT_BLOCK_PRIVATE_URLS" in str(refused)
    assert len(fake.requests) == 1  # ...and, guarded, nothing more arrived


@pytest.mark.parametrize(("provider", "transport"), TRANSPORTS)
@pytest.mark.parametrize(
    "rebound",
    [["127.0.0.1"], ["::1"], ["::ffff:127.0.0.1"], ["0.0.0.0"], ["169.254.169.254"], ["fe80::1"],
     ["fc00::1"], ["10.0.0.7"], [PUBLIC, "127.0.0.1"]],
)  # fmt: skip
async def test_hardening_2_a_name_rebound_to_a_private_address_is_refused_when_the_connection_opens(
    provider: str,
    transport: str,
    rebound: list[str],
    server: FakeLLMServer,
    make_model: MakeModel,
    collect: Collect,
) -> None:
    network = FakeNetwork({"llm.test": [PUBLIC]}, routes={PUBLIC: "127.0.0.1"})
    url = f"http://llm.test:{server.port}"
    with using_network(network):
        _, completion = await collect(make_model(spec_for(provider, transport, url, guarded=True)), REQUEST)
        assert completion.text and len(server.requests) == 1  # while the name is public, it is served

        network.answer("llm.test", rebound)  # the attacker's DNS now answers with a private address
        refused = await refusal_of(make_model(spec_for(provider, transport, url, guarded=True)))
    assert isinstance(refused, NetworkRefused)
    assert f"'llm.test' resolves to {ipaddress.ip_address(rebound[-1])}" in str(refused)
    assert len(server.requests) == 1
    assert network.lookups == [("llm.test", [PUBLIC]), ("llm.test", rebound)]


def _redirect_target(server: FakeLLMServer, provider: str) -> str:
    path = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    return f"{server.url}{path}?api_key={CANARY}"


@pytest.mark.parametrize(("provider", "transport"), TRANSPORTS)
@pytest.mark.parametrize("guarded", [True, False])
async def test_hardening_2_a_redirect_is_never_followed_and_says_where_it_pointed(
    provider: str, transport: str, guarded: bool, server: FakeLLMServer, make_model: MakeModel
) -> None:
    network = FakeNetwork({"public.test": [PUBLIC]}, routes={PUBLIC: "127.0.0.1"})
    async with Redirector(_redirect_target(server, provider), keep_path=False) as redirector:
        # guarded, the redirector stands on a public name; unguarded, on loopback as a local server would
        host = "public.test" if guarded else "127.0.0.1"
        spec = spec_for(provider, transport, f"http://{host}:{redirector.port}", guarded=guarded)
        with using_network(network):
            refused = await refusal_of(make_model(spec))
    assert isinstance(refused, NetworkRefused) and not refused.retryable
    message = str(refused)
    target = _redirect_target(server, provider).partition("?")[0]
    assert f"redirect (HTTP 307) to {target}; redirects are not followed" in message
    assert "set base_url to the final address" in message
    assert CANARY not in message and "moved" not in message  # neither the query nor the body is shown
    assert len(redirector.requests) == 1
    assert server.requests == []


async def test_hardening_2_a_guarded_client_ignores_proxy_settings(
    server: FakeLLMServer, make_model: MakeModel, collect: Collect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would resolve the name where the guard cannot see: guarded clients connect directly."""
    async with Redirector("http://127.0.0.1:9/") as proxy:
        for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(variable, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        network = FakeNetwork({"llm.test": [PUBLIC]}, routes={PUBLIC: "127.0.0.1"})
        with using_network(network):
            for provider, transport in TRANSPORTS:
                spec = spec_for(provider, transport, f"http://llm.test:{server.port}", guarded=True)
                _, completion = await collect(make_model(spec), REQUEST)
                assert completion.text
    assert proxy.requests == []
    assert len(server.requests) == len(TRANSPORTS)
