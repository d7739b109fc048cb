"""The atheris target runs clean over its seed corpus (the samples from events/), and each seed reaches the code
it is meant for; `make fuzz` then explores from there."""

from fuzz.targets import one_input, seed_corpus


def test_the_fuzz_target_accepts_every_seed():
    seeds = seed_corpus()
    assert len(seeds) >= 15
    for seed in seeds:
        one_input(seed)


def test_the_fuzz_target_survives_degenerate_inputs():
    for data in (b"", b"\x00", b"\x01", b"\x02", b"\x00" + b"[" * 50_000, b"\x01\xff\xfe", b"\x02\xff"):
        one_input(data)
