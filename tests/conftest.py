"""Shared test helpers. Sample payloads come from events/, the same files `sam local invoke -e` takes."""

import os

# Powertools reads these when its Logger and Metrics are created (at import); the template sets them in Lambda.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "didomi-braze-sync")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "DidomiBrazeSync")
# Never reach a real AWS account from the tests, whatever the developer's shell holds.
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "eu-central-1"
