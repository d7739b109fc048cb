"""`make fuzz SECONDS=600`: run the atheris target for a chosen time, seeded from events/.

Findings (crashes) are written by libFuzzer as crash-* files in the working directory."""

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from fuzz.targets import one_input, seed_corpus


def main() -> None:
    corpus = Path(tempfile.mkdtemp(prefix="didomi-braze-corpus-"))
    for number, seed in enumerate(seed_corpus()):
        (corpus / f"seed-{number:03d}").write_bytes(seed)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
