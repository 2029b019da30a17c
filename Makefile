# Makefile for the workflows extension (PGXS)

# workflows_router: the same API in a router database, routed to shards by
# PL/Proxy (sql/workflows_router--*.sql; see README.md, "Running in production")
EXTENSION = workflows workflows_router
MODULE_big = workflows
OBJS = \
	src/api.o \
	src/async.o \
	src/compose.o \
	src/crash.o \
	src/executor.o \
	src/flow.o \
	src/guc.o \
	src/http.o \
	src/ids.o \
	src/kinds.o \
	src/launcher.o \
	src/owner.o \
	src/query.o \
	src/replay.o \
	src/retry.o \
	src/roles.o \
	src/secrets.o \
	src/shmem.o \
	src/step.o \
	src/utility.o \
	src/wakeup.o \
	src/workflows.o

# The install script of the current version is built from the readable
# pieces in sql/install/, concatenated in file-name order.  Released
# versions' install scripts and every upgrade script are kept as they are in
# sql/ (a database created with 0.1 is updated with ALTER EXTENSION UPDATE).
EXTVERSION = 0.2
DATA_built = sql/workflows--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/workflows--*.sql)) \
	$(wildcard sql/workflows_router--*.sql)
EXTRA_CLEAN = $(DATA_built)

REGRESS = test_setup engine steps control versions security races operations describe stability flow_control composition
REGRESS_OPTS = --inputdir=. --load-extension=workflows

# the step-kind registry, for extensions that add kinds of steps
# (installed in include/server/extension/workflows/)
HEADERS = src/workflows_step_kind.h

# libcurl (Debian: libcurl4-openssl-dev) drives HTTP steps
SHLIB_LINK = -lcurl

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src -DWF_EXTVERSION=\"$(EXTVERSION)\"
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on every header: a struct changed in workflows.h must
# not leave objects compiled against the old layout
$(OBJS): $(wildcard src/*.h)

$(DATA_built): $(sort $(wildcard sql/install/*.sql))
	cat $^ > $@

print-regress:
	@echo $(REGRESS)

.PHONY: print-regress
