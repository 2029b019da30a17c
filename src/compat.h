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
#include "utils/acl.h"

/* PostgreSQL 16 replaced pg_proc_aclcheck() by object_aclcheck() */
#if PG_VERSION_NUM >= 160000
#define wf_proc_aclcheck(fn, role, mode) \
	object_aclcheck(ProcedureRelationId, (fn), (role), (mode))
#else
#define wf_proc_aclcheck(fn, role, mode) \
	pg_proc_aclcheck((fn), (role), (mode))
#endif

/* PostgreSQL 16 replaced pg_database_ownercheck() by object_ownercheck() */
#if PG_VERSION_NUM >= 160000
#define wf_database_ownercheck(db, role) \
	object_ownercheck(DatabaseRelationId, (db), (role))
#else
#define wf_database_ownercheck(db, role) \
	pg_database_ownercheck((db), (role))
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

#endif							/* WF_COMPAT_H */
