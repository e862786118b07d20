"""``python -m smart_nets.data.phantoms OUT_DIR --num N --seed S``: see :func:`generate_phantoms`."""

import logging

import fire

from smart_nets.data.phantoms import generate_phantoms

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fire.Fire(generate_phantoms)
