# ckpt: build, test, demo, install. `make test` and `make demo` set up everything they need (as root).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR = $(DESTDIR)$(PREFIX)/bin
MANDIR = $(DESTDIR)$(PREFIX)/share/man
BASHCOMPDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR = $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHCOMPDIR = $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
TOOLS = ckpt-dump ckpt-pack ckpt-unpack ckpt-restore lxc-fixtty
CARGO ?= cargo

.PHONY: all build deps test test-unit lint fuzz-smoke demo doom-demo install uninstall deb man clean

all: build

build:
	$(CARGO) build --release --locked

# Debian packages (LXC, busybox, sshd, zstd, ...) and a working CRIU >= 4.2; quick when present.
deps:
	scripts/deps

# Everything: unit, CLI and root end-to-end tests (two-host test bed, real CRIU, LXC and ssh).
test: deps
	$(CARGO) build --release --locked
	$(CARGO) test --release --locked --workspace --no-fail-fast

# Only the tests that need neither root nor LXC.
test-unit:
	$(CARGO) test --locked --workspace --lib --test stream --test fixtty --test docs

# Every crate and target: the workspace (tools, the three library crates, tests) and the fuzz
# targets, which are a workspace of their own.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --all --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

# Builds the fuzz targets and runs each on the seed corpus for a few thousand mutations.
fuzz-smoke: build
	scripts/fuzz-smoke

demo: deps build
	scripts/demo

# The 2014 demo for real: Doom in a Debian container, watched over VNC, migrated live.
doom-demo: deps build
	scripts/doom-demo

man:
	@for page in man/*.[15]; do echo "$$page"; man --warnings -l "$$page" > /dev/null; done

# Tools, man pages and bash, zsh and fish completions (each tool prints its own: --gen-completions).
install: build
	install -d $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man5 $(BASHCOMPDIR) $(ZSHCOMPDIR) $(FISHCOMPDIR)
	set -e; for t in $(TOOLS); do \
	    install -m 0755 target/release/$$t $(BINDIR)/$$t; \
	    target/release/$$t --gen-completions bash > $(BASHCOMPDIR)/$$t; \
	    target/release/$$t --gen-completions zsh > $(ZSHCOMPDIR)/_$$t; \
	    target/release/$$t --gen-completions fish > $(FISHCOMPDIR)/$$t.fish; \
	done
	install -m 0644 man/*.1 $(MANDIR)/man1/
	install -m 0644 man/*.5 $(MANDIR)/man5/

uninstall:
	for t in $(TOOLS); do rm -f $(BINDIR)/$$t $(MANDIR)/man1/$$t.1 \
	    $(BASHCOMPDIR)/$$t $(ZSHCOMPDIR)/_$$t $(FISHCOMPDIR)/$$t.fish; done
	rm -f $(MANDIR)/man5/ckpt-stream.5

# target/debian/ckpt_<version>_<arch>.deb: tools (stripped), man pages, completions, copyright.
deb: build
	pkg/build-deb target/release target/debian

clean:
	$(CARGO) clean
