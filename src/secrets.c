/*-------------------------------------------------------------------------
 *
 * secrets.c
 *	  Named secrets per role, for the header values of HTTP steps.
 *
 * workflows.set_secret(name, value) stores a value under the calling
 * role; a step's request names it ({"secret": "stripe"}) instead of
 * carrying it, so the value is never in the step's request, its status,
 * its attempts, an error or a log line.  Nobody can read a value back with
 * SQL (the table has no grants); only an executor resolves it, for the
 * owner of the instance, into the memory of the call.
 *
 * IDENTIFICATION
 *	  src/secrets.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(wf_set_secret);
PG_FUNCTION_INFO_V1(wf_drop_secret);

/* longest secret value, in bytes */
#define WF_MAX_SECRET_LEN	8192

/* [A-Za-z0-9_.-], 1 to 63 bytes */
bool
wf_secret_name_valid(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len > 63)
		return false;
	for (const char *p = name; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '-' || *p == '.'))
			return false;
	return true;
}

static WfQuery q_secret = {
	"SELECT value FROM workflows._secrets WHERE owner = $1 AND name = $2",
	2, {OIDOID, TEXTOID}, NULL
};

/* the value of an owner's secret, or an error that does not show it */
char *
wf_secret_value(Oid owner, const char *name)
{
	Datum		v[2];

	v[0] = ObjectIdGetDatum(owner);
	v[1] = CStringGetTextDatum(name);
	if (wf_query(&q_secret, v, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("secret \"%s\" does not exist for role \"%s\"",
						name, GetUserNameFromId(owner, false)),
				 errhint("The instance's owner stores it with workflows.set_secret().")));
	return wf_get_text(0, 1);
}

static char *
secret_name_arg(FunctionCallInfo fcinfo)
{
	char	   *name;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("secret name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!wf_secret_name_valid(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid secret name \"%s\"", name),
				 errdetail("A secret name has 1 to 63 letters, digits, \"_\", \"-\" or \".\".")));
	return name;
}

/* the secret and its audit row (the name, never the value) */
static WfQuery q_set_secret = {
	"WITH s AS (INSERT INTO workflows._secrets (owner, name, value) VALUES ($1, $2, $3) "
	"  ON CONFLICT (owner, name) DO UPDATE SET value = EXCLUDED.value, updated_at = now() "
	"  RETURNING (xmax <> 0) AS replaced) "
	"INSERT INTO workflows.audit (acting_role, action, owner, details) "
	"SELECT $4, 'set_secret', $1::regrole, jsonb_build_object('name', $2, 'replaced', s.replaced) FROM s",
	4, {OIDOID, TEXTOID, TEXTOID, NAMEOID}, NULL
};

static WfQuery q_drop_secret = {
	"WITH s AS (DELETE FROM workflows._secrets WHERE owner = $1 AND name = $2 RETURNING name) "
	"INSERT INTO workflows.audit (acting_role, action, owner, details) "
	"SELECT $3, 'drop_secret', $1::regrole, jsonb_build_object('name', s.name) FROM s",
	3, {OIDOID, TEXTOID, NAMEOID}, NULL
};

/*
 * workflows.set_secret(name text, value text) returns void
 */
Datum
wf_set_secret(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name = secret_name_arg(fcinfo);
	text	   *value;
	WfAsOwner	s;
	Datum		v[4];

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("secret value must not be null")));
	value = PG_GETARG_TEXT_PP(1);
	if (VARSIZE_ANY_EXHDR(value) > WF_MAX_SECRET_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("secret value is longer than %d bytes", WF_MAX_SECRET_LEN)));
	if (!wf_http_header_value_valid(text_to_cstring(value)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secret value contains a control character"),
				 errdetail("Secrets are sent as HTTP header values.")));
	v[0] = ObjectIdGetDatum(caller);
	v[1] = CStringGetTextDatum(name);
	v[2] = PointerGetDatum(value);
	v[3] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(caller, false)));
	wf_as_owner_begin(&s);
	wf_query(&q_set_secret, v, NULL, 0);
	wf_as_owner_end(&s);
	PG_RETURN_VOID();
}

/*
 * workflows.drop_secret(name text) returns boolean: whether it existed
 */
Datum
wf_drop_secret(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name = secret_name_arg(fcinfo);
	WfAsOwner	s;
	Datum		v[3];
	bool		found;

	v[0] = ObjectIdGetDatum(caller);
	v[1] = CStringGetTextDatum(name);
	v[2] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(caller, false)));
	wf_as_owner_begin(&s);
	wf_query(&q_drop_secret, v, NULL, 0);
	found = SPI_processed > 0;
	wf_as_owner_end(&s);
	PG_RETURN_BOOL(found);
}
