# Developer shortcuts. Mutation testing (docs/testing.md):
#   make mutation MODULE=losses.mer     one module of tools/mutation.toml (several: MODULE="a b")
#   make mutation                       every configured module
PYTHON ?= python

.PHONY: mutation mutation-list
mutation:
	$(PYTHON) tools/mutation.py $(if $(MODULE),$(MODULE),--all)

mutation-list:
	$(PYTHON) tools/mutation.py --list
