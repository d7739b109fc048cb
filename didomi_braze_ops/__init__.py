"""Operator commands for a deployed stack (`didomi-braze …`, `make …`): check and store the connector document,
follow one user through the logs and the state table, and replay what the dead-letter queue holds.

Not shipped to Lambda (the functions' code is functions/); it imports the functions' package for the domain rules,
so that what the commands compute is what the functions compute.
"""
