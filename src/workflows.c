/*-------------------------------------------------------------------------
 *
 * workflows.c
 *	  Module entry point: GUCs, shared memory and the launcher.
 *
 * The library must be loaded with shared_preload_libraries, because it
 * registers a background worker (the launcher) and asks for shared memory.
 * Everything else lives in the files named in workflows.h.
 *
 * IDENTIFICATION
 *	  src/workflows.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "fmgr.h"
#include "miscadmin.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("workflows must be loaded via \"shared_preload_libraries\""),
				 errhint("Add workflows to shared_preload_libraries in postgresql.conf and restart the server.")));

	wf_define_gucs();
	wf_register_builtin_kinds();
	wf_shmem_init();
	wf_register_launcher();
	wf_install_utility_hook();
}
