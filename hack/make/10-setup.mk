# System packages (Debian) and the project's virtualenv.
APT_PACKAGES := haproxy socat keepalived nginx-light libnginx-mod-stream openssh-server openssh-client debootstrap systemd-container wrk iproute2 openssl curl dpkg-dev shellcheck nftables

.PHONY: setup setup-system setup-python
setup: setup-system setup-python

setup-system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

setup-python: $(VENV)/.installed

$(VENV)/.installed: requirements.txt hack/requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r hack/requirements-dev.txt
	touch $@
