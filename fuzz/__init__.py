"""Coverage-guided fuzzing (atheris) of the parsing and mapping code."""
