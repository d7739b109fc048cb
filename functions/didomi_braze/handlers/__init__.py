"""Lambda entry points: decode the AWS event, call the service, encode the answer."""
