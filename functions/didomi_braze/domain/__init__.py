"""The pure domain: Didomi models, mapping, Braze payloads, retry schedule. No I/O, no environment."""
