# Makefile for the workflows extension (PGXS)

EXTENSION = workflows
MODULE_big = workflows
OBJS = \
	src/api.o \
	src/executor.o \
	src/guc.o \
	src/launcher.o \
	src/query.o \
	src/replay.o \
	src/retry.o \
	src/shmem.o \
	src/step.o \
	src/utility.o \
	src/wakeup.o \
	src/workflows.o

DATA = $(wildcard sql/workflows--*.sql)

REGRESS = engine steps control security
REGRESS_OPTS = --inputdir=. --load-extension=workflows

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

print-regress:
	@echo $(REGRESS)

.PHONY: print-regress
