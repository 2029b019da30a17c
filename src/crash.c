/*-------------------------------------------------------------------------
 *
 * crash.c
 *	  Crash accounting: a step that kills its executor is retried a few
 *	  times, then quarantined.
 *
 * A step's attempt is only recorded when the attempt's transaction commits,
 * so an attempt whose process dies (a crash, a FATAL error such as
 * pg_terminate_backend(), or SIGKILL) would leave no trace, and a step that
 * crashes its process every time would crash-loop the server forever: every
 * backend crash makes the postmaster restart all of them.
 *
 * So before each attempt the executor writes what it is about to run into a
 * small file of its own under pg_workflows/ (no fsync: it must survive the
 * process, not the machine), and marks the file idle after the attempt's
 * transaction has committed.  The file is named after the executor's slot
 * and the slot's generation, "executor_<database>_<index>_<generation>":
 * an orphan of an earlier launcher that exits after its successor took the
 * slot renames or removes its own file, never its successor's (a file
 * named after the slot alone was shared by both: the orphan's exit could
 * unlink or rename the file its successor was writing, and the successor's
 * next crash went unaccounted).  An executor that starts and finds its file
 * records the attempt as interrupted (SQLSTATE WF008) and makes the step
 * run again at once; after workflows.max_step_crashes interrupted attempts
 * the step fails for good with WF008, which the workflow sees like any
 * other failed step.  The file stays open and is overwritten in place (one
 * pwrite() of a few hundred bytes, padded with blanks to the file's length
 * so that no older text trails it): a rename() or unlink() per attempt
 * would cost a file system journal update each, more than the step.
 *
 * An orderly stop is not a crash: a fast or immediate shutdown, an
 * administrator's pg_terminate_backend(), the extension's own stop requests
 * (DROP DATABASE) and the postmaster's SIGQUIT after another process
 * crashed interrupt a healthy step.  The executor then renames its file to
 * "<file>.stop" on the way out (wf_crash_orderly_stop()); such an attempt is
 * recorded as interrupted by a shutdown (SQLSTATE 57P01), the step runs
 * again at once, and neither its quarantine count nor its retry limit is
 * charged.  Only an exit the step's own process caused -- SIGKILL, a
 * segmentation fault, a FATAL error raised by the step (including
 * terminating its own backend) -- counts toward quarantine.
 *
 * IDENTIFICATION
 *	  src/crash.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/json.h"

#define WF_CRASH_DIR	"pg_workflows"

static char crash_path[MAXPGPATH];
static char stop_path[MAXPGPATH];
static uint32 my_generation = 0;
static bool crash_file_written = false; /* an attempt is noted in it */
static int	crash_fd = -1;
static int	crash_file_len = 0;
static List *recovered = NIL;	/* names, in TopMemoryContext */
static LOCKTAG recovery_lock;
static bool recovery_locked = false;

static WfQuery q_lock_instance = {
	"SELECT status FROM workflows.instances WHERE id = $1 FOR NO KEY UPDATE",
	1, {TEXTOID}, NULL
};

/*
 * Read after the instance is locked, in a statement of its own: its
 * snapshot then sees what the executor that held the instance committed.
 * (Read in the locking statement, the step could be seen as it was before
 * that executor ran it again -- and be recorded as interrupted once more,
 * undoing its completion.)
 */
static WfQuery q_step_state = {
	"SELECT status, attempts FROM workflows.steps WHERE instance_id = $1 AND key = $2",
	2, {TEXTOID, TEXTOID}, NULL
};

static WfQuery q_crashes = {
	"SELECT count(*) FROM workflows.attempt_log WHERE instance_id = $1 AND step_key = $2 "
	"AND error->>'sqlstate' = 'WF008' "
	"AND run = (SELECT run FROM workflows.instances WHERE id = $1)",
	2, {TEXTOID, TEXTOID}, NULL
};

static WfQuery q_crash_step = {
	"INSERT INTO workflows.steps AS s (instance_id, key, seq, name, type, status, error, "
	"  config, hash, attempts, started_at, ended_at, wake_at, interrupted) "
	"VALUES ($1, $2, $3, $4, 'step', $5, $6, $7, $8, $9, $10, "
	"        CASE WHEN $5 = 'failed' THEN now() END, CASE WHEN $5 = 'retrying' THEN now() END, $11) "
	"ON CONFLICT (instance_id, key) DO UPDATE SET status = EXCLUDED.status, "
	"  error = EXCLUDED.error, attempts = EXCLUDED.attempts, ended_at = EXCLUDED.ended_at, "
	"  wake_at = EXCLUDED.wake_at, interrupted = s.interrupted + EXCLUDED.interrupted",
	11, {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, INT8OID,
		INT4OID, TIMESTAMPTZOID, INT4OID}, NULL
};

static WfQuery q_crash_attempt = {
	"INSERT INTO workflows.attempt_log (instance_id, step_key, attempt, started_at, ended_at, "
	"  success, error, run) VALUES ($1, $2, $3, $4, now(), false, $5, "
	"  (SELECT run FROM workflows.instances WHERE id = $1)) "
	"ON CONFLICT DO NOTHING",
	5, {TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, JSONBOID}, NULL
};

static WfQuery q_crash_wake = {
	"UPDATE workflows.instances SET wake_at = now(), revision = revision + 1 "
	"WHERE id = $1 AND status IN ('queued', 'running', 'waiting')",
	1, {TEXTOID}, NULL
};

/*
 * Name this executor's file after its slot and the slot's generation;
 * creates pg_workflows/ if needed.
 */
void
wf_crash_init(Oid dboid, int index, uint32 generation)
{
	if (MakePGDirectory(WF_CRASH_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", WF_CRASH_DIR)));
	snprintf(crash_path, sizeof(crash_path), "%s/executor_%u_%d_%u",
			 WF_CRASH_DIR, dboid, index, generation);
	snprintf(stop_path, sizeof(stop_path), "%s.stop", crash_path);
	my_generation = generation;
	if (crash_fd >= 0)
		close(crash_fd);
	crash_fd = -1;
	crash_file_written = false;
}

/*
 * Parse a crash file's name: "executor_<db>_<index>_<generation>", or
 * "executor_<db>_<index>" as 0.1 named them (no generation), either with
 * ".stop" after an orderly stop.  Returns false for any other name.
 */
static bool
parse_crash_name(const char *name, Oid *dboid, int *index, uint32 *generation,
				 bool *has_generation, bool *orderly)
{
	unsigned int db,
				gen;
	int			n = 0;
	const char *rest;

	if (sscanf(name, "executor_%u_%d%n", &db, index, &n) != 2 || n == 0)
		return false;
	rest = name + n;
	*has_generation = false;
	*generation = 0;
	if (rest[0] == '_')
	{
		int			m = 0;

		if (sscanf(rest, "_%u%n", &gen, &m) != 1 || m == 0)
			return false;
		*has_generation = true;
		*generation = gen;
		rest += m;
	}
	*orderly = strcmp(rest, ".stop") == 0;
	if (!*orderly && rest[0] != '\0')
		return false;
	*dboid = db;
	return true;
}

/*
 * Is the file's writer a live executor that still holds its slot?  A file
 * of 0.1 (no generation) has no live writer; nor does an orphan's, once its
 * slot went to a successor (its attempt, if one is in flight, is protected
 * by the instance's row lock: recover_file() waits for it).
 */
static bool
writer_running(Oid dboid, int index, uint32 generation, bool has_generation)
{
	return has_generation && wf_executor_running(dboid, index, generation);
}

/*
 * Overwrite the file with "text", padded with blanks to the file's length
 * (JSON allows trailing white space).  One write at offset 0 of a few
 * hundred bytes: a reader of a dead executor's file sees all of it.
 */
static bool
write_crash_file(const char *text, int len, int elevel)
{
	char	   *buf;
	int			total;

	if (crash_fd < 0)
	{
		crash_fd = BasicOpenFile(crash_path, O_RDWR | O_CREAT | PG_BINARY);
		if (crash_fd < 0)
		{
			ereport(elevel,
					(errcode_for_file_access(),
					 errmsg("could not open file \"%s\": %m", crash_path)));
			return false;
		}
		crash_file_len = 0;
	}
	total = Max(len, crash_file_len);
	buf = palloc(total);
	memcpy(buf, text, len);
	memset(buf + len, ' ', total - len);
	if (pg_pwrite(crash_fd, buf, total, 0) != total)
	{
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", crash_path)));
		pfree(buf);
		return false;
	}
	crash_file_len = total;
	pfree(buf);
	return true;
}

/*
 * The executor is being stopped in an orderly way while an attempt may be
 * running: mark its file as such (or remove it, idle).  Async-signal-safe
 * (a rename() or unlink() of prepared paths), so that the SIGQUIT handler,
 * which exits at once, can call it.
 */
void
wf_crash_orderly_stop(void)
{
	if (crash_file_written)
		(void) rename(crash_path, stop_path);
	else if (crash_fd >= 0)
		(void) unlink(crash_path);	/* idle: nothing to leave behind */
}

/*
 * Before an attempt: write what is about to run, as one JSON object (the
 * step's name and key may contain any character).
 */
void
wf_crash_note_attempt(const char *id, WfAction *a, Jsonb *config, bool first)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"id\": ");
	escape_json(&buf, id);
	appendStringInfoString(&buf, ", \"key\": ");
	escape_json(&buf, a->key);
	appendStringInfoString(&buf, ", \"name\": ");
	escape_json(&buf, a->name);
	appendStringInfo(&buf, ", \"seq\": %d, \"attempt\": %d, \"hash\": " INT64_FORMAT
					 ", \"started\": ", a->seq, a->attempt, a->hash);
	escape_json(&buf, timestamptz_to_str(a->started));
	appendStringInfoString(&buf, ", \"config\": ");
	(void) JsonbToCString(&buf, &config->root, VARSIZE(config));
	appendStringInfo(&buf, ", \"first\": %s}", first ? "true" : "false");

	(void) write_crash_file(buf.data, buf.len, ERROR);
	crash_file_written = true;
	pfree(buf.data);
}

/* after the attempt's transaction committed (or rolled back cleanly) */
void
wf_crash_clear(void)
{
	static const char idle[] = "{\"idle\": true}";

	if (crash_file_written)
	{
		(void) write_crash_file(idle, sizeof(idle) - 1, WARNING);
		crash_file_written = false;
	}
}

static char *
field(Jsonb *j, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&j->root, key, strlen(key), NULL);

	if (v == NULL)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	if (v->type == jbvBool)
		return pstrdup(v->val.boolean ? "true" : "false");
	return NULL;
}

/*
 * Record the attempt a crash file describes as interrupted, and retry the
 * step at once, or fail it for good after workflows.max_step_crashes such
 * attempts.  Nothing is done if the attempt did commit after all.
 */
static void
recover_file(const char *path, bool orderly)
{
	struct stat st;
	char	   *text;
	int			fd;
	Jsonb	   *j;
	char	   *id,
			   *key;
	int			attempt,
				crashes;
	bool		first;
	bool		stray = false;
	Datum		v[11];
	char		n[11];
	bool		isnull;
	char	   *message;
	StringInfoData err;

	if (stat(path, &st) < 0)
		return;

	text = palloc(st.st_size + 1);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0 || read(fd, text, st.st_size) != st.st_size)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", path)));
		if (fd >= 0)
			CloseTransientFile(fd);
		return;
	}
	CloseTransientFile(fd);
	text[st.st_size] = '\0';

	/*
	 * The file is written in one piece, but after an operating system
	 * crash (no fsync) it may be empty or torn: then nothing is known about
	 * the attempt, which simply runs again.
	 */
	if (st.st_size == 0 ||
		pg_parse_json(wf_json_lexer(text, st.st_size), &nullSemAction) != JSON_SUCCESS)
	{
		ereport(WARNING,
				(errmsg("workflows: ignoring unreadable crash file \"%s\"", path)));
		return;
	}
	j = wf_cstring_jsonb(text);
	/* no attempt was running */
	if (JB_ROOT_IS_OBJECT(j) && field(j, "idle") != NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(j) || field(j, "id") == NULL || field(j, "key") == NULL ||
		field(j, "name") == NULL || field(j, "seq") == NULL || field(j, "attempt") == NULL ||
		field(j, "hash") == NULL || field(j, "started") == NULL || field(j, "config") == NULL)
	{
		ereport(WARNING,
				(errmsg("workflows: ignoring unreadable crash file \"%s\"", path)));
		return;
	}
	id = field(j, "id");
	key = field(j, "key");
	attempt = atoi(field(j, "attempt"));
	/* (absent in files of 0.1: there a step always began its transaction) */
	first = field(j, "first") == NULL || strcmp(field(j, "first"), "false") != 0;

	v[0] = CStringGetTextDatum(id);
	v[1] = CStringGetTextDatum(key);
	if (wf_query(&q_lock_instance, v, NULL, 1) == 0)
		return;					/* the instance is gone */
	{
		char	   *instance_status = wf_get_text(0, 1);
		char	   *step_status = NULL;
		Datum		d = (Datum) 0;

		isnull = true;
		if (wf_query(&q_step_state, v, NULL, 1) == 1)
		{
			step_status = wf_get_text(0, 1);
			d = wf_get_datum(0, 2, &isnull);
		}

		/* the attempt did commit (the process died after its commit) */
		if (step_status != NULL &&
			(strcmp(step_status, "complete") == 0 || strcmp(step_status, "failed") == 0 ||
			 (!isnull && DatumGetInt32(d) >= attempt)))
			return;
		if (strcmp(instance_status, "complete") == 0 ||
			strcmp(instance_status, "errored") == 0 ||
			strcmp(instance_status, "terminated") == 0)
			return;
		stray = !first && step_status == NULL;
	}

	/*
	 * The attempt was not the first thing its transaction wrote for the
	 * instance (an event taken, a sleep ended, another step): the rollback
	 * undid those too.  After an orderly stop there is nothing to charge,
	 * and nothing is recorded: the instance simply runs again.  After a
	 * crash the step must still be charged (a step that crashes its
	 * executor every time must end in quarantine), but where it stands
	 * among the instance's steps is not known any more: it is recorded
	 * "stray" (seq -1), and the replay that reaches it again gives it its
	 * place (replay.c).
	 */
	if (!first && orderly)
	{
		wf_query(&q_crash_wake, v, NULL, 0);
		return;
	}

	wf_query(&q_crashes, v, NULL, 1);
	crashes = (int) DatumGetInt64(wf_get_datum(0, 1, &isnull)) + (orderly ? 0 : 1);

	initStringInfo(&err);
	if (orderly)
	{
		message = psprintf("step \"%s\" was interrupted by a shutdown of its executor", key);
		appendStringInfoString(&err, "{\"message\": ");
		escape_json(&err, message);
		appendStringInfoString(&err, ", \"sqlstate\": \"57P01\"}");
	}
	else
	{
		if (crashes >= wf_max_step_crashes)
			message = psprintf("step \"%s\" was interrupted %d times by the exit of its executor and is quarantined",
							   key, crashes);
		else
			message = psprintf("the executor running step \"%s\" exited during the attempt", key);
		appendStringInfoString(&err, "{\"message\": ");
		escape_json(&err, message);
		appendStringInfoString(&err, ", \"sqlstate\": \"WF008\"}");
	}

	memset(n, ' ', sizeof(n));
	v[2] = Int32GetDatum(stray ? -1 : atoi(field(j, "seq")));
	v[3] = CStringGetTextDatum(field(j, "name"));
	v[4] = CStringGetTextDatum(!orderly && crashes >= wf_max_step_crashes ? "failed" : "retrying");
	v[5] = JsonbPGetDatum(wf_cstring_jsonb(err.data));
	v[6] = JsonbPGetDatum(wf_cstring_jsonb(field(j, "config")));
	v[7] = Int64GetDatum(strtoi64(field(j, "hash"), NULL, 10));
	v[8] = Int32GetDatum(attempt);
	v[9] = DirectFunctionCall3(timestamptz_in, CStringGetDatum(field(j, "started")),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	v[10] = Int32GetDatum(orderly ? 1 : 0);
	wf_query(&q_crash_step, v, n, 0);

	v[2] = Int32GetDatum(attempt);
	v[3] = v[9];
	v[4] = v[5];
	wf_query(&q_crash_attempt, v, NULL, 0);
	wf_query(&q_crash_wake, v, NULL, 0);

	ereport(LOG,
			(errmsg("workflows: %s (instance \"%s\")", message, id)));
}

/*
 * At executor start: handle the crash files of our previous incarnations
 * and those of the other executors of this database that are not running
 * (after a crash every executor restarts at once, and the first to get
 * here must record every interrupted attempt before any executor can run
 * those steps again).  Must be called in a transaction, connected to SPI,
 * before the executor claims any instance, after wf_crash_init().  The
 * files are removed by wf_crash_clear_recovered() after the transaction
 * commits.
 */
void
wf_crash_recover(Oid dboid, int myindex)
{
	DIR		   *dir;
	struct dirent *de;

	/*
	 * One executor of the database at a time, from reading the files to
	 * removing them (wf_crash_clear_recovered()): after a crash-restart the
	 * executors start together, and the files of executors not yet running
	 * are read by whichever comes first.
	 */
	SET_LOCKTAG_ADVISORY(recovery_lock, dboid, 0x77666372, 0, 3);	/* "wfcr" */
	(void) LockAcquire(&recovery_lock, ExclusiveLock, true, false);
	recovery_locked = true;

	dir = AllocateDir(WF_CRASH_DIR);
	while ((de = ReadDir(dir, WF_CRASH_DIR)) != NULL)
	{
		Oid			db;
		int			index;
		uint32		generation;
		bool		has_generation;
		bool		orderly;
		char		path[MAXPGPATH];
		MemoryContext old;

		if (!parse_crash_name(de->d_name, &db, &index, &generation,
							  &has_generation, &orderly) || db != dboid)
			continue;

		/*
		 * Our own name, before we opened our file, is a leftover of a
		 * server that ran before (generations start again at each start of
		 * the server); once we write it, it is ours alone.  Any other live
		 * writer keeps its file.
		 */
		if (index == myindex && has_generation && generation == my_generation)
		{
			if (crash_fd >= 0)
				continue;
		}
		else if (writer_running(dboid, index, generation, has_generation))
			continue;
		snprintf(path, sizeof(path), "%s/%s", WF_CRASH_DIR, de->d_name);
		recover_file(path, orderly);
		old = MemoryContextSwitchTo(TopMemoryContext);
		recovered = lappend(recovered, pstrdup(path));
		MemoryContextSwitchTo(old);
	}
	FreeDir(dir);
}

/* remove the files wf_crash_recover() handled, once its work committed */
void
wf_crash_clear_recovered(Oid dboid)
{
	ListCell   *lc;

	foreach(lc, recovered)
	{
		char	   *path = lfirst(lc);

		if (unlink(path) < 0 && errno != ENOENT)
			ereport(WARNING,
					(errcode_for_file_access(),
					 errmsg("could not remove file \"%s\": %m", path)));
	}
	list_free_deep(recovered);
	recovered = NIL;
	if (recovery_locked)
	{
		LockRelease(&recovery_lock, ExclusiveLock, true);
		recovery_locked = false;
	}
}

/*
 * Has an executor of this database that is not running left a file behind?
 * An executor stopped while the others go on (pg_terminate_backend, a
 * failed DROP DATABASE, an orphan that exits late) leaves its file to
 * whichever executor looks first; the running ones look before each round
 * of claims (one pass over a directory of a few files), so that the
 * interrupted attempt is recorded before its step runs again.  Called
 * outside a transaction: a directory that cannot be read is only logged.
 */
bool
wf_crash_pending(Oid dboid, int myindex)
{
	DIR		   *dir;
	struct dirent *de;
	bool		pending = false;

	dir = AllocateDir(WF_CRASH_DIR);
	while (!pending && (de = ReadDirExtended(dir, WF_CRASH_DIR, LOG)) != NULL)
	{
		Oid			db;
		int			index;
		uint32		generation;
		bool		has_generation;
		bool		orderly;

		if (!parse_crash_name(de->d_name, &db, &index, &generation,
							  &has_generation, &orderly) || db != dboid)
			continue;
		if (index == myindex && has_generation && generation == my_generation)
			continue;			/* ours */
		if (!writer_running(dboid, index, generation, has_generation))
			pending = true;
	}
	if (dir != NULL)
		FreeDir(dir);
	return pending;
}
