# Inlet — the two commands a newcomer needs: `make dev` (local stack) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
export VENV
CARGO ?= cargo
DEV_CONFIG ?= infra/dev/inlet.toml
# Every log line the Rust tests and the processes they start write, searched for secrets.
TEST_LOGS ?= $(CURDIR)/target/test-logs

.PHONY: test browser dev load bench venv fmt lint unit features cycles template build fuzz clean package sam-build footprint capacity

## Run everything CI runs: format, lints, feature guard, module cycles, Rust tests (AWS adapters against
## a moto server this target starts on a free loopback port), the search of their logs for
## secrets, template guardrails. The console's browser test needs Chromium (`make browser`).
test: venv browser fmt lint features cycles
	rm -rf $(TEST_LOGS)
	INLET_LOG_DIR=$(TEST_LOGS) infra/scripts/with-moto $(CARGO) test --workspace --locked
	$(VENV)/bin/python infra/scripts/no-secrets-in-logs $(TEST_LOGS)
	$(VENV)/bin/python -m pytest -q tests/template tests/tooling

## Debian's Chromium and ChromeDriver for the console's browser test (tests/it/console.rs), pinned;
## does nothing once /usr/bin/chromedriver exists. Needs root or sudo.
browser:
	infra/scripts/browser

## The whole pipeline locally on SQLite: POST http://127.0.0.1:8787/webhooks/{source}
## (LISTEN=127.0.0.1:PORT for another address).
LISTEN ?= 127.0.0.1:8787
dev:
	$(CARGO) run --locked -p inlet-cli --bin inlet -- dev --config $(DEV_CONFIG) --listen $(LISTEN)

## Load test: for each connection count a fresh release `inlet dev` on a free loopback port with
## an empty temporary store, driven by `inlet-load` (a separate process: signed webhooks, closed loop),
## then every acknowledged event checked dispatched exactly once. Figures: docs/performance.md.
LOAD_CONNECTIONS ?= 1,16,64
LOAD_DURATION ?= 30s
load:
	DEV_CONFIG=$(DEV_CONFIG) infra/scripts/load $(LOAD_CONNECTIONS) $(LOAD_DURATION)

## Every figure of docs/performance.md in one run (about 25 min here): the criterion hot-path
## table (each bench beside a bare HMAC-SHA256 of the same body), AWS calls per event counted
## against moto, `make footprint`, `make load`, and the cost per million priced from those calls
## (infra/scripts/bench). BENCH_QUICK=1: the criterion table only. Not part of `make test`.
bench: venv
	FOOTPRINT_STARTS=$(FOOTPRINT_STARTS) FOOTPRINT_EVENTS=$(FOOTPRINT_EVENTS) \
	  LOAD_CONNECTIONS=$(LOAD_CONNECTIONS) LOAD_DURATION=$(LOAD_DURATION) DEV_CONFIG=$(DEV_CONFIG) \
	  infra/scripts/bench $(if $(BENCH_QUICK),--quick,)

## Project-local Python tools (moto, cfn-lint, pytest), pinned in infra/requirements.lock.
venv:
	infra/scripts/venv

fmt:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Lambdas stay lean: no SQLite in a function, no AWS SDK in the CLI.
features:
	infra/scripts/check-features

## The library's top-level modules import each other in no cycle.
cycles:
	infra/scripts/check-module-cycles

build:
	$(CARGO) build --workspace --locked

## Every cargo-fuzz target (provider verifiers, handshakes and body parsers; envelopes;
## configs) for FUZZ_SECONDS each. Needs rustup's nightly; not part of `make test`.
FUZZ_SECONDS ?= 60
fuzz:
	infra/scripts/fuzz $(FUZZ_SECONDS)

clean:
	rm -rf target .inlet fuzz/target fuzz/corpus fuzz/artifacts

## The three Lambda zips (arm64, release) with cargo-lambda from the pinned deploy venv
## (.venv-deploy, infra/requirements-deploy.lock); prints their sizes.
package:
	infra/scripts/package

## `sam build` with cargo-lambda and aws-sam-cli from the same pinned deploy venv, offline:
## the built template and bootstraps land in .aws-sam/build for `sam deploy`.
sam-build:
	VENV=.venv-deploy LOCK=infra/requirements-deploy.lock infra/scripts/venv
	PATH="$(CURDIR)/.venv-deploy/bin:$$PATH" SAM_CLI_TELEMETRY=0 .venv-deploy/bin/sam build

## Lambda footprint: init time (spawn to the first Runtime API `next`, median of
## FOOTPRINT_STARTS cold starts), peak RSS and zip sizes of the three release functions,
## against a local Runtime API stub and moto. Figures: docs/performance.md.
FOOTPRINT_STARTS ?= 10
FOOTPRINT_EVENTS ?= 20
footprint:
	infra/scripts/footprint $(FOOTPRINT_STARTS) $(FOOTPRINT_EVENTS)

## The capacity table of docs/scale.md: item, message and entry sizes measured on the wiring
## template.yaml deploys (against moto), and the events per second at which each limit binds.
capacity: venv
	VENV=$(VENV) infra/scripts/with-moto cargo test --locked -p inlet-cli --test it -- \
	  scale::capacity_table_from_measured_sizes --exact --nocapture 2>/dev/null | grep '^|'

