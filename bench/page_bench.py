"""The page on a long meeting: 10,000 deltas into a board meeting's room view in Chromium, as fast as a
busy server would send them. Reports the time per batch of updates (one flush per animation frame), frames
per second while it streams, and memory afterwards.

    python bench/page_bench.py [--deltas 10000] [--speakers 3] [--per-tick 40]

The room is an idle stored room; the page's SSE connection is open but quiet, and the bench feeds events into
its queue the way the SSE handler does (`--per-tick` every 16 ms), so what is measured is the page's own
work: applying events, Markdown rendering of each changed turn, layout and paint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from service.helpers import make_settings, running_server  # noqa: E402
from store.fixtures import sqlite_database  # noqa: E402

FEED = """async ([deltas, speakers, perTick]) => {
  const room = window.mootRoom;
  const names = Array.from({length: speakers}, (_, i) => 'Member' + i);
  let seq = 0;
  const ev = (e) => ({seq: ++seq, ...e});
  room.queue.push(ev({type: 'room_started', agents: [{name: 'Chair', role: 'moderator', colour: '#d4af37'},
      ...names.map((n) => ({name: n, role: 'member'}))], moderator: 'Chair', resumed: false, simulated: false}));
  room.queue.push(ev({type: 'round_started', round: 1, max_rounds: 1}));
  for (const n of names) room.queue.push(ev({type: 'turn_started', turn_id: 'r1:speech:' + n, round: 1, kind: 'speech', speaker: n}));
  room.schedule();
  const flushes = [];
  const original = room.flush.bind(room);
  room.flush = () => { const t0 = performance.now(); original(); flushes.push(performance.now() - t0); };
  let frames = 0, counting = true;
  const count = () => { frames++; if (counting) requestAnimationFrame(count); };
  requestAnimationFrame(count);
  const words = ['the', 'board', 'should', '**weigh**', 'cost', 'and', 'risk', '`carefully`', 'before', 'we', 'act.\\n\\n'];
  const start = performance.now();
  for (let sent = 0; sent < deltas; ) {
    for (let k = 0; k < perTick && sent < deltas; k++, sent++) {
      const n = names[sent % speakers];
      room.queue.push(ev({type: 'turn_delta', turn_id: 'r1:speech:' + n, round: 1, speaker: n, text: words[sent % words.length] + ' '}));
    }
    room.schedule();
    await new Promise((r) => setTimeout(r, 16));
  }
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  counting = false;
  const seconds = (performance.now() - start) / 1000;
  flushes.sort((a, b) => a - b);
  const q = (p) => flushes[Math.min(flushes.length - 1, Math.floor(p * flushes.length))];
  const chars = [...room.turns.values()].reduce((s, t) => s + t.text.length, 0);
  return {deltas, seconds, fps: frames / seconds, batches: flushes.length,
          p50: q(0.5), p95: q(0.95), max: flushes[flushes.length - 1], chars,
          nodes: document.getElementsByTagName('*').length};
}"""


async def main(deltas: int, speakers: int, per_tick: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        async with (
            running_server(sqlite_database(tmp), make_settings(tmp)) as live,
            async_playwright() as driver,
        ):
            token = await live.new_user()
            async with live.client(token) as http:
                spec = {
                    "task": "A long meeting",
                    "protocol": "board",
                    "agents": [
                        {"name": "Chair", "role": "moderator", "model": "simulated"},
                        {"name": "A", "model": "simulated"},
                    ],
                }
                room = (await http.post("/rooms", json=spec)).json()
            browser = await driver.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--enable-precise-memory-info"]
            )
            page = await browser.new_page(viewport={"width": 1360, "height": 860})
            await page.goto(f"{live.url}/login?token={token}")
            await page.goto(f"{live.url}/rooms/{room['id']}")
            await page.wait_for_function("() => window.mootRoom && window.mootRoom.source")
            heap_before = await page.evaluate("() => performance.memory.usedJSHeapSize")
            result: dict[str, Any] = await page.evaluate(FEED, [deltas, speakers, per_tick])
            client = await page.context.new_cdp_session(page)
            await client.send("HeapProfiler.collectGarbage")
            result["heap_mib_before"] = heap_before / 2**20
            result["heap_mib_after"] = await page.evaluate("() => performance.memory.usedJSHeapSize") / 2**20
            await browser.close()
            return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=int, default=10_000)
    parser.add_argument("--speakers", type=int, default=3)
    parser.add_argument("--per-tick", type=int, default=40)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.deltas, args.speakers, args.per_tick)), indent=1))
