# One entry point for everything a developer or CI does. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
export PYTHONPATH := functions:.
export SAM_CLI_TELEMETRY := 0

.PHONY: test lint unit demo serve invoke validate-config preview put-config trace replay backfill bench simulate fuzz clean

$(VENV)/.installed: requirements.txt functions/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# aws-sam-cli pins its own boto3 and pydantic: it gets a virtualenv of its own.
# checkov (template security rules) pins its own dependencies too.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov==3.3.30
	touch $@

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check aws-sam-cli==1.170.0
	touch $@

## make test: lint the code and the template, then run the whole test suite (unit, integration, end-to-end).
test: lint
	$(PY) -m pytest

lint: $(VENV)/.installed $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed
	$(VENV)/bin/ruff check functions didomi_braze_ops sandbox tests benchmarks fuzz
	$(VENV)/bin/ruff format --check functions didomi_braze_ops sandbox tests benchmarks fuzz
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV)/bin/cfn-lint template.yaml --parameters AuthMode=oauth AllowedSourceCidrs=35.159.1.63/32 RetryMaximumConcurrency=2 AlarmEmail=ops@example.com
	$(VENV)/bin/cfn-lint template.yaml --parameters EnableBrazeCurrents=true BrazeCurrentsPrincipal=210987654321 BrazeCurrentsExternalId=example-external-id CurrentsOptIns=true
	$(VENV)/bin/cfn-lint template.yaml --parameters EnableBackfill=true
	$(VENV)/bin/cfn-lint template.yaml --parameters \
		ExistingConnectorSecretArn=arn:aws:secretsmanager:eu-central-1:123456789012:secret:didomi/connector-AbC123 \
		ConnectorSecretKmsKeyArn=arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml --region eu-central-1
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

## make demo: the whole product on loopback with a scripted scenario; exits when done.
demo: $(VENV)/.installed
	$(PY) -m sandbox demo

## make serve: the local stack, running until Ctrl-C; prints the webhook URL, token and a curl line.
serve: $(VENV)/.installed
	$(PY) -m sandbox serve

## make invoke FUNCTION=WebhookFunction EVENT=events/webhook-user-created.json (IngestFunction: events/ingest-batch.json)
invoke: $(VENV)/.installed
	$(PY) -m sandbox invoke $(FUNCTION) --event $(EVENT)

# Operator commands (didomi_braze_ops; after `pip install .` also the `didomi-braze` console script). Those for a
# deployed stack find its resources from the CloudFormation stack's outputs, with your AWS credentials.
OPS := $(PY) -m didomi_braze_ops
REGION_ARG = $(if $(REGION),--region $(REGION))

## make validate-config FILE=connector.json
validate-config: $(VENV)/.installed
	$(OPS) validate-config $(FILE)

## make preview FILE=connector.json EVENT=events/webhook-user-updated.json
preview: $(VENV)/.installed
	$(OPS) preview $(FILE) --event $(EVENT)

## make put-config FILE=connector.json STACK=<stack name>   (or SECRET_ID=<ConnectorSecretArn output> instead of STACK)
put-config: $(VENV)/.installed
	$(OPS) put-config $(FILE) $(if $(STACK),--stack "$(STACK)") $(if $(SECRET_ID),--secret-id "$(SECRET_ID)") $(REGION_ARG)

## make trace USER=<external id or e-mail> STACK=<stack name> [SINCE=7d]
# USER must come from the command line: the shell's own $$USER (your login) is never a Braze user.
trace: $(VENV)/.installed
	@test "$(origin USER)" = "command line" || { echo "usage: make trace USER=<external id or e-mail> STACK=<stack name> [SINCE=7d]" >&2; exit 2; }
	$(OPS) trace "$(USER)" --stack "$(STACK)" --since $(or $(SINCE),7d) $(REGION_ARG)

## make replay STACK=<stack name> [CATEGORY=retries_exhausted [REASON="…"] [MOVE=yes]]
replay: $(VENV)/.installed
	$(OPS) replay --stack "$(STACK)" $(if $(CATEGORY),--category "$(CATEGORY)") $(if $(REASON),--reason "$(REASON)") $(if $(filter yes,$(MOVE)),--move) $(REGION_ARG)

## make backfill ARGS="--stack <stack name> --dry-run"   (then without --dry-run; --resume RUN_ID, --follow, --file F)
backfill: $(VENV)/.installed
	$(OPS) backfill $(ARGS)

# The benchmarks' fresh processes run like Lambda's: Python 3.13 with boto3, on the `sam build` artifact. Without a
# python3.13 that runs (a pyenv shim for an unselected version does not), they say so and use this interpreter.
PY313 := $(shell for p in $$(command -v python3.13) $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	"$$p" -c "" 2>/dev/null && echo "$$p" && break; done)
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed:
	@if [ -n "$(PY313)" ]; then \
		$(PY313) -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
			$$(grep -E '^boto3==' requirements.txt) && touch $@; \
	else echo "no python3.13 found: the benchmarks run on $(PYTHON)"; fi

## make bench: cold start, warm event, worker, memory and package size against same-run baselines (about 10 minutes)
bench: $(VENV)/.installed $(SAM_VENV)/.installed $(BENCH_VENV)/.installed
	$(PY) -m benchmarks

## make simulate: 1,000,000 webhooks in 200 s through the real services on a virtual clock, figures to
## benchmarks/RESULTS.md (about 10 minutes; SCALE=50 for the test's size, SEED=n for another draw)
simulate: $(VENV)/.installed
	$(PY) -m benchmarks.simulation $(if $(SCALE),--scale $(SCALE)) $(if $(SEED),--seed $(SEED))

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(BENCH_VENV) .aws-sam .pytest_cache .ruff_cache .hypothesis
