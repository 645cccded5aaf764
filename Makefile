# sandboxd — the two commands: `make run` and `make test`.
# Both install what is missing (scripts/setup), build, and build the base image
# (and the microVM images).
BUILD ?= build
CMAKE_FLAGS ?=
DATA_DIR ?= /var/lib/sandboxd
LISTEN ?= 127.0.0.1:8080
# exposeHttp URLs are https://<sandbox>-<port>.localhost:8443 (local CA in DATA_DIR)
INGRESS ?= 127.0.0.1:8443
# exposeSsh logins: ssh -p 2222 <username>@127.0.0.1 (host key in DATA_DIR)
SSH_LISTEN ?= 127.0.0.1:2222
ifeq ($(CI),true)
  CMAKE_FLAGS += -DSANDBOXD_WERROR=ON
endif

.PHONY: all setup build image run test unit-test node-test bench clean

all: build

setup:
	@scripts/setup

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) >/dev/null
	ninja -C $(BUILD)

# The base image, and the microVM backend's kernel, initramfs and root disk
# from it (the kernel comes from Debian's archive, cached in
# /var/cache/sandboxd/kernel; docs/microvm.md).
image: build
	scripts/build-image $(BUILD)/image/rootfs
	scripts/vm/build-all $(BUILD)/image/vm --agent $(BUILD)/bin/sandbox-agent --rootfs $(BUILD)/image/rootfs

# Starts the server on its embedded defaults and prints what to paste into a
# shell for the official SDK (a fresh token for org "default" on every run).
run: image
	@token=$$($(BUILD)/bin/sandboxd token create --org default --data-dir $(DATA_DIR) | tail -n 1); \
	  host=$(LISTEN); \
	  echo; \
	  echo "  export DENO_SANDBOX_ENDPOINT=http://$$host"; \
	  echo "  export DENO_DEPLOY_ENDPOINT=http://$$host"; \
	  echo "  export DENO_DEPLOY_TOKEN=$$token"; \
	  echo
	exec $(BUILD)/bin/sandboxd serve --listen $(LISTEN) --data-dir $(DATA_DIR) --ingress-listen $(INGRESS) --ssh-listen $(SSH_LISTEN)

test: image
	@scripts/run-tests $(BUILD)

bench: image
	BUILD=$(BUILD) bench/lifecycle.sh
	$(BUILD)/bin/bench-egress

clean:
	rm -rf $(BUILD)
