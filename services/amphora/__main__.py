"""`python -m services.amphora`: build the agent's settings from the environment and serve."""

from __future__ import annotations

import asyncio
import logging

from services.amphora.app import serve
from services.amphora.settings import AmphoraSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = AmphoraSettings()  # required fields come from FULCRUM_AMPHORA_* variables
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
