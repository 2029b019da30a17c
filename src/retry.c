/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  Step configuration (retries, backoff, timeout) and backoff arithmetic.
 *
 * The configuration has the shape hosted workflow products use:
 *
 *	  {"retries": {"limit": 5, "delay": "10 seconds", "backoff": "exponential"},
 *	   "timeout": "10 minutes"}
 *
 * where a delay or timeout is an interval as text or a number of
 * milliseconds.  Missing keys take the documented defaults; an unknown key
 * or a bad value is an error naming the key.  The backoff functions are pure
 * so that the schedule they produce can be tested without a clock.
 *
 * IDENTIFICATION
 *	  src/retry.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "utils/json.h"

#include <math.h>

#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/datetime.h"
#include "utils/numeric.h"

#define WF_DEFAULT_RETRIES		5
#define WF_DEFAULT_DELAY_MS		10000
#define WF_DEFAULT_TIMEOUT_MS	(10 * 60 * 1000)
/* no computed delay exceeds a year */
#define WF_MAX_DELAY_MS			((int64) 365 * 24 * 3600 * 1000)
#define WF_MAX_RETRIES			10000

/* milliseconds in an interval, counting a month as 30 days */
int64
wf_interval_ms(Interval *iv)
{
	int64		ms = iv->time / 1000;

	ms += (int64) iv->day * 24 * 3600 * 1000;
	ms += (int64) iv->month * 30 * 24 * 3600 * 1000;
	return ms;
}

static void
config_error(const char *key, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid step config: \"%s\" %s", key, problem),
			 errhint("A step config looks like {\"retries\": {\"limit\": 5, \"delay\": \"10 seconds\", \"backoff\": \"exponential\"}, \"timeout\": \"10 minutes\"}.")));
}

/*
 * Parse interval text as interval_in() does, but say whether it parsed
 * instead of raising the input error: a bad duration is reported as a bad
 * config key (22023, naming the key), like every other config mistake.
 */
static bool
parse_interval(char *str, Interval *result)
{
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	int			dterr;
	struct pg_itm_in tt;

	dterr = ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype,
						  MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &tt);
	if (dterr == DTERR_BAD_FORMAT)
		dterr = DecodeISO8601Interval(str, &dtype, &tt);
	return dterr == 0 && dtype == DTK_DELTA && itmin2interval(&tt, result) == 0;
}

/*
 * A duration: interval text or a number of milliseconds, >= 0.  Returns
 * NULL and sets *ms, or says what is wrong with it (for the caller's
 * error, which names the key).  Also used for HTTP requests (http.c).
 */
const char *
wf_duration_ms(JsonbValue *v, int64 *ms)
{
	*ms = 0;
	if (v->type == jbvNumeric)
	{
		Datum		d = DirectFunctionCall1(numeric_float8, NumericGetDatum(v->val.numeric));
		double		f = DatumGetFloat8(d);

		if (isnan(f) || f < 0 || f > (double) WF_MAX_DELAY_MS * 10)
			return "must be a non-negative number of milliseconds or an interval";
		*ms = (int64) f;
		return NULL;
	}
	if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
		Interval	iv;

		if (!parse_interval(s, &iv))
			return psprintf("is not a duration: \"%s\"", s);
		*ms = wf_interval_ms(&iv);
		if (*ms < 0)
			return "must not be negative";
		return NULL;
	}
	return "must be an interval such as \"10 seconds\" or a number of milliseconds";
}

/* a duration of a step config key, or a config error naming the key */
static int64
duration_ms(JsonbValue *v, const char *key)
{
	int64		ms;
	const char *problem = wf_duration_ms(v, &ms);

	if (problem != NULL)
		config_error(key, problem);
	return ms;
}

static bool
is_json_null(Jsonb *j)
{
	JsonbValue	v;

	return JsonbExtractScalar(&j->root, &v) && v.type == jbvNull;
}

static bool
key_is(JsonbValue *k, const char *name)
{
	return (size_t) k->val.string.len == strlen(name) &&
		strncmp(k->val.string.val, name, k->val.string.len) == 0;
}

static char *
key_str(const char *prefix, JsonbValue *k)
{
	return psprintf("%s%.*s", prefix, k->val.string.len, k->val.string.val);
}

static void
parse_retries(JsonbContainer *jc, WfStepConfig *cfg)
{
	JsonbIterator *it = JsonbIteratorInit(jc);
	JsonbValue	k,
				v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		if (key_is(&k, "limit"))
		{
			Datum		d;
			double		f;

			if (v.type != jbvNumeric)
				config_error("retries.limit", "must be a number");
			d = DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric));
			f = DatumGetFloat8(d);
			if (isnan(f) || f < 0 || f != floor(f) || f > WF_MAX_RETRIES)
				config_error("retries.limit", "must be a whole number from 0 to 10000");
			cfg->retries_limit = (int) f;
		}
		else if (key_is(&k, "delay"))
			cfg->delay_ms = duration_ms(&v, "retries.delay");
		else if (key_is(&k, "backoff"))
		{
			if (v.type != jbvString)
				config_error("retries.backoff", "must be \"constant\", \"linear\" or \"exponential\"");
			if (key_is(&v, "constant"))
				cfg->backoff = WF_BACKOFF_CONSTANT;
			else if (key_is(&v, "linear"))
				cfg->backoff = WF_BACKOFF_LINEAR;
			else if (key_is(&v, "exponential"))
				cfg->backoff = WF_BACKOFF_EXPONENTIAL;
			else
				config_error("retries.backoff", "must be \"constant\", \"linear\" or \"exponential\"");
		}
		else
			config_error(key_str("retries.", &k), "is not a known key");
	}
}

/*
 * "concurrency": {"limit": N, "key": "<name>"} or "throttle": {"limit": N,
 * "period": <duration>, "key": "<name>"}: a limit shared by every step of
 * the database that names the same key (flow.c).
 */
static void
parse_step_limit(JsonbValue *v, const char *what, WfStepConfig *cfg)
{
	bool		throttle = strcmp(what, "throttle") == 0;
	JsonbIterator *it;
	JsonbValue	k,
				x;
	JsonbIteratorToken tok;
	int			limit = 0;
	int64		period = -1;
	char	   *key = NULL;

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		config_error(what, "must be a JSON object");
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &x, true);
		if (key_is(&k, "limit"))
		{
			double		f = -1;

			if (x.type == jbvNumeric)
				f = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													   NumericGetDatum(x.val.numeric)));
			if (isnan(f) || f < 1 || f != floor(f) || f > (throttle ? 10000 : 1000))
				config_error(psprintf("%s.limit", what),
							 throttle ? "must be a whole number from 1 to 10000" :
							 "must be a whole number from 1 to 1000");
			limit = (int) f;
		}
		else if (key_is(&k, "key"))
		{
			if (x.type != jbvString || x.val.string.len < 1 ||
				x.val.string.len > WF_MAX_FLOW_KEY_LEN)
				config_error(psprintf("%s.key", what), "must be a string of 1 to 200 bytes");
			key = pnstrdup(x.val.string.val, x.val.string.len);
		}
		else if (throttle && key_is(&k, "period"))
		{
			period = duration_ms(&x, "throttle.period");
			if (period <= 0)
				config_error("throttle.period", "must be positive");
		}
		else
			config_error(key_str(throttle ? "throttle." : "concurrency.", &k), "is not a known key");
	}
	if (limit == 0)
		config_error(psprintf("%s.limit", what), "is required");
	if (key == NULL)
		config_error(psprintf("%s.key", what), "is required");
	if (throttle && period < 0)
		config_error("throttle.period", "is required");
	if (throttle)
	{
		cfg->thr_limit = limit;
		cfg->thr_period_ms = period;
		strlcpy(cfg->thr_key, key, sizeof(cfg->thr_key));
	}
	else
	{
		cfg->conc_limit = limit;
		strlcpy(cfg->conc_key, key, sizeof(cfg->conc_key));
	}
	/* it must wait for its slot outside any run in place */
	cfg->inline_ok = false;
}

/*
 * Fill cfg from a step's config argument (NULL: all defaults).  Errors name
 * the offending key.
 */
void
wf_parse_step_config(Jsonb *config, WfStepConfig *cfg)
{
	JsonbIterator *it;
	JsonbValue	k,
				v;
	JsonbIteratorToken tok;

	cfg->retries_limit = WF_DEFAULT_RETRIES;
	cfg->delay_ms = WF_DEFAULT_DELAY_MS;
	cfg->backoff = WF_BACKOFF_EXPONENTIAL;
	cfg->timeout_ms = WF_DEFAULT_TIMEOUT_MS;
	cfg->inline_ok = true;
	cfg->timeout_set = false;
	cfg->conc_limit = 0;
	cfg->conc_key[0] = '\0';
	cfg->thr_limit = 0;
	cfg->thr_period_ms = 0;
	cfg->thr_key[0] = '\0';
	cfg->rollback = NULL;

	/* JSON null, as config->'x' gives for a missing key: the defaults */
	if (config == NULL || (JB_ROOT_IS_SCALAR(config) && is_json_null(config)))
		return;
	if (!JB_ROOT_IS_OBJECT(config))
		config_error("config", "must be a JSON object");

	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		if (key_is(&k, "retries"))
		{
			if (v.type == jbvNull)
				continue;
			if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
				config_error("retries", "must be a JSON object");
			parse_retries(v.val.binary.data, cfg);
		}
		else if (key_is(&k, "timeout"))
		{
			cfg->timeout_ms = duration_ms(&v, "timeout");
			cfg->timeout_set = true;
		}
		else if (key_is(&k, "inline"))
		{
			if (v.type != jbvBool)
				config_error("inline", "must be true or false");
			cfg->inline_ok = v.val.boolean;
		}
		else if (key_is(&k, "concurrency") || key_is(&k, "throttle"))
		{
			if (v.type == jbvNull)
				continue;
			parse_step_limit(&v, key_is(&k, "throttle") ? "throttle" : "concurrency", cfg);
		}
		else if (key_is(&k, "rollback"))
		{
			/* the compensation of the step (compose.c): SQL or a function */
			if (v.type == jbvNull)
				continue;
			if (v.type != jbvString || v.val.string.len == 0)
				config_error("rollback", "must be SQL text or a function such as \"app.refund(jsonb)\"");
			cfg->rollback = pnstrdup(v.val.string.val, v.val.string.len);
		}
		else
			config_error(key_str("", &k), "is not a known key");
	}
	if (cfg->conc_limit > 0 || cfg->thr_limit > 0)
		cfg->inline_ok = false;
}

/* the effective configuration, as stored with the step */
Jsonb *
wf_step_config_jsonb(const WfStepConfig *cfg)
{
	static const char *const names[] = {"constant", "linear", "exponential"};
	StringInfoData buf;

	/* "inline" only when it is not the default, as older steps have none */
	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"retries\": {\"limit\": %d, \"delay\": " INT64_FORMAT
					 ", \"backoff\": \"%s\"}, \"timeout\": " INT64_FORMAT "%s",
					 cfg->retries_limit, cfg->delay_ms, names[cfg->backoff],
					 cfg->timeout_ms, cfg->inline_ok ? "" : ", \"inline\": false");
	/* flow control of a shared resource, when set */
	if (cfg->conc_limit > 0)
	{
		appendStringInfo(&buf, ", \"concurrency\": {\"limit\": %d, \"key\": ", cfg->conc_limit);
		escape_json(&buf, cfg->conc_key);
		appendStringInfoChar(&buf, '}');
	}
	if (cfg->thr_limit > 0)
	{
		appendStringInfo(&buf, ", \"throttle\": {\"limit\": %d, \"period\": " INT64_FORMAT
						 ", \"key\": ", cfg->thr_limit, cfg->thr_period_ms);
		escape_json(&buf, cfg->thr_key);
		appendStringInfoChar(&buf, '}');
	}
	/* the compensation of the step (compose.c), when set */
	if (cfg->rollback != NULL)
	{
		appendStringInfoString(&buf, ", \"rollback\": ");
		escape_json(&buf, cfg->rollback);
	}
	appendStringInfoChar(&buf, '}');
	return wf_cstring_jsonb(buf.data);
}

/*
 * Delay before the next attempt, after attempt number "failed_attempt"
 * (1-based) failed: delay, delay * n, or delay * 2^(n-1), capped at a year.
 */
int64
wf_retry_delay_ms(const WfStepConfig *cfg, int failed_attempt)
{
	double		d = (double) cfg->delay_ms;

	switch (cfg->backoff)
	{
		case WF_BACKOFF_CONSTANT:
			break;
		case WF_BACKOFF_LINEAR:
			d *= failed_attempt;
			break;
		case WF_BACKOFF_EXPONENTIAL:
			d *= pow(2.0, (double) (failed_attempt - 1));
			break;
	}
	if (d > (double) WF_MAX_DELAY_MS)
		return WF_MAX_DELAY_MS;
	return (int64) d;
}
