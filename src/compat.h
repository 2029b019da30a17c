/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between the PostgreSQL versions the extension builds
 *	  against (15, 16, 17), in one place.
 *
 * IDENTIFICATION
 *	  src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WF_COMPAT_H
#define WF_COMPAT_H

#include "catalog/pg_database.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_tablespace.h"
#include "utils/acl.h"

/* PostgreSQL 16 replaced pg_proc_aclcheck() by object_aclcheck() */
#if PG_VERSION_NUM >= 160000
#define wf_proc_aclcheck(fn, role, mode) \
	object_aclcheck(ProcedureRelationId, (fn), (role), (mode))
#else
#define wf_proc_aclcheck(fn, role, mode) \
	pg_proc_aclcheck((fn), (role), (mode))
#endif

/* PostgreSQL 17 made the JSON lexer context caller-allocatable */
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#if PG_VERSION_NUM >= 170000
#define wf_json_lexer(text, len) \
	makeJsonLexContextCstringLen(NULL, (text), (len), GetDatabaseEncoding(), true)
#else
#define wf_json_lexer(text, len) \
	makeJsonLexContextCstringLen((text), (len), GetDatabaseEncoding(), true)
#endif

/* PostgreSQL 16 replaced the per-kind ownership and ACL checks too */
#if PG_VERSION_NUM >= 160000
#define wf_database_ownercheck(db, role) \
	object_ownercheck(DatabaseRelationId, (db), (role))
#define wf_tablespace_aclcheck(spc, role, mode) \
	object_aclcheck(TableSpaceRelationId, (spc), (role), (mode))
#else
#define wf_database_ownercheck(db, role) \
	pg_database_ownercheck((db), (role))
#define wf_tablespace_aclcheck(spc, role, mode) \
	pg_tablespace_aclcheck((spc), (role), (mode))
#endif

/*
 * The background worker processes in use: PostgreSQL gives them the PGPROCs
 * after those of the client backends and the autovacuum processes (the same
 * layout in 15, 16 and 17; 18 moved the autovacuum count).  A PGPROC is in
 * use while its pid is set; read without ProcStructLock, which is not
 * exported, so the count is a snapshot, good for a warning only.
 */
#include "miscadmin.h"
#include "postmaster/autovacuum.h"
#include "storage/proc.h"
static inline int
wf_count_busy_bgworker_procs(void)
{
	int			first = MaxConnections + autovacuum_max_workers + 1;
	int			n = 0;

	for (int i = first; i < first + max_worker_processes; i++)
		if (((volatile PGPROC *) &ProcGlobal->allProcs[i])->pid != 0)
			n++;
	return n;
}

/* 17 gave wait event sets a resource owner instead of a memory context */
#include "storage/latch.h"
#if PG_VERSION_NUM >= 170000
#define wf_create_wait_event_set(n) CreateWaitEventSet(NULL, (n))
#else
#define wf_create_wait_event_set(n) CreateWaitEventSet(CurrentMemoryContext, (n))
#endif

#endif							/* WF_COMPAT_H */
