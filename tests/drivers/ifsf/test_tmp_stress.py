import asyncio, random
import pytest
from drivers.base import DriverError
from tests.drivers.ifsf.test_sim import station, Station, NODE_1, FP1  # noqa


@pytest.mark.parametrize("seed", range(6))
async def test_stress(station: Station, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(40):
        fault = rng.choices(["drop", "garbage", "refuse"], [30, 40, 30])[0]
        cmd = {"drop": "drop 1", "garbage": f"garbage 1 {rng.randint(1,4)}", "refuse": f"refuse 1 {rng.choice((1,1,2,3))}"}[fault]
        await station.control.handle(cmd)
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        ok = False
        for _ in range(30):
            try:
                await station.cd.wait_link(NODE_1, 2)
                await station.cd.read(NODE_1, FP1, [0x14], timeout=0.5)
                ok = True
                break
            except DriverError as exc:
                last = exc
                await asyncio.sleep(0.1)
        assert ok, f"round {i} after {cmd}: {last}"
