/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTP step kind: workflows.http(name, request, config), run
 *	  outside any transaction through libcurl's multi interface.
 *
 * One executor drives many requests at once: async.c asks for the
 * sockets to wait on (wait), hands back the ready ones (drive), and
 * collects the attempts that ended (poll).  libcurl tells which sockets it
 * needs through its socket callback (kept in "socks") and when it wants to
 * be called back through its timer callback.
 *
 * Safety, before any byte is sent:
 *	- the owner must have the privileges of workflows_http (kinds.c);
 *	- the URL's host must match workflows.http_allowed_hosts;
 *	- every address connected to is checked in the open-socket callback:
 *	  loopback, private, link-local (cloud metadata), shared, multicast and
 *	  reserved addresses are refused unless an address or network entry of
 *	  workflows.http_allowed_hosts contains them -- a host name entry never
 *	  allows them, so a public name that resolves (or re-resolves) to an
 *	  inner address is refused;
 *	- redirects are not followed unless the request asks, and then each
 *	  one is a new request checked the same way;
 *	- proxies from the server's environment are not used;
 *	- header values may name a secret of the owner (secrets.c), resolved
 *	  into memory just before the call and never stored, shown or logged.
 *
 * IDENTIFICATION
 *	  src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <curl/curl.h>

#include "common/base64.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

/* default timeout of an HTTP request, when neither it nor its step has one */
#define WF_HTTP_DEFAULT_TIMEOUT_MS	30000
/* redirects followed at most, when the request allows any */
#define WF_HTTP_MAX_REDIRECTS		5
/* the response's first bytes quoted in the error of a failed request */
#define WF_HTTP_ERROR_BODY			500

typedef struct HttpHeader
{
	char	   *name;
	char	   *value;			/* NULL: the secret "secret" */
	char	   *secret;
} HttpHeader;

/* a request, as parsed from the step's jsonb */
typedef struct HttpRequest
{
	char	   *method;
	char	   *url;
	List	   *headers;		/* of HttpHeader */
	char	   *body;			/* NULL: none */
	int			bodylen;
	bool		body_json;
	int64		timeout_ms;		/* -1: not given */
	bool		follow;
	List	   *retry_on;		/* extra statuses to retry (int) */
} HttpRequest;

/* one call in flight: WfStepCall.private_data */
typedef struct HttpCall
{
	WfStepCall *call;
	HttpRequest *req;
	List	   *lines;			/* "Name: value" header lines, resolved */
	CURL	   *easy;
	struct curl_slist *slist;
	char	   *url;			/* of the current request (redirects) */
	int			redirects;
	TimestampTz deadline;
	StringInfoData body;
	StringInfoData head;		/* header lines of the current response */
	bool		too_big;
	bool		oom;
	char	   *refused;		/* why an address was refused */
	List	   *policy;			/* workflows.http_allowed_hosts at the start */
	bool		done;
	CURLcode	code;
	char		errbuf[CURL_ERROR_SIZE];
} HttpCall;

static CURLM *multi = NULL;
static int	nactive = 0;		/* transfers in the multi handle */
/* workflows.http_allowed_hosts when the multi handle (its cache of open
 * connections) was made: a reused connection skips the address check */
static char *multi_policy = NULL;
/* when libcurl wants to be called back (its timer callback); 0: never */
static TimestampTz curl_due = 0;
static List *finished = NIL;	/* HttpCalls that ended, not polled yet */

/* sockets libcurl wants watched: a small array, scanned linearly */
typedef struct HttpSock
{
	curl_socket_t sock;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
} HttpSock;
static HttpSock *socks = NULL;
static int	nsocks = 0;
static int	maxsocks = 0;

static void
http_error(const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid HTTP request: %s", problem),
			 errhint("A request looks like {\"method\": \"POST\", \"url\": \"https://api.example.com/charge\", \"headers\": {\"Authorization\": {\"secret\": \"stripe\"}}, \"body\": {\"amount\": 100}, \"timeout\": \"10 seconds\"}.")));
}

/* a copy in ASCII upper or lower case (no locale: also outside transactions) */
static char *
ascii_case(const char *s, bool upper)
{
	char	   *copy = pstrdup(s);

	for (char *p = copy; *p; p++)
		*p = upper ? pg_ascii_toupper((unsigned char) *p) : pg_ascii_tolower((unsigned char) *p);
	return copy;
}

static char *
jstr(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* a header name: a token (RFC 9110); a value: no control characters */
static bool
valid_header_name(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char) *s) || strchr("!#$%&'*+-.^_`|~", *s)))
			return false;
	return true;
}

bool
wf_http_header_value_valid(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x20 && *s != '\t')
			return false;
	return true;
}

/* ---- workflows.http_allowed_hosts ---- */

/* an address of either family, in network order */
typedef struct HttpAddr
{
	int			family;
	unsigned char a[16];
} HttpAddr;

static bool
parse_addr(const char *s, HttpAddr *out)
{
	char		buf[64];
	size_t		len = strlen(s);

	/* "[::1]" as URLs write it */
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']' && len - 2 < sizeof(buf))
	{
		memcpy(buf, s + 1, len - 2);
		buf[len - 2] = '\0';
		s = buf;
	}
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, s, out->a) == 1)
	{
		out->family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, out->a) == 1)
	{
		out->family = AF_INET6;
		return true;
	}
	return false;
}

static bool
in_net(const HttpAddr *addr, const HttpAddr *net, int bits)
{
	int			i;

	if (addr->family != net->family)
		return false;
	for (i = 0; bits > 0; i++, bits -= 8)
	{
		unsigned char mask = bits >= 8 ? 0xff : (unsigned char) (0xff << (8 - bits));

		if ((addr->a[i] & mask) != (net->a[i] & mask))
			return false;
	}
	return true;
}

/* an address or a network ("10.0.0.0/8", "::1"), or false */
static bool
parse_net(const char *text, HttpAddr *net, int *bits)
{
	char		buf[64];
	char	   *slash;

	strlcpy(buf, text, sizeof(buf));
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash++ = '\0';
	if (!parse_addr(buf, net))
		return false;
	*bits = slash ? atoi(slash) : (net->family == AF_INET ? 32 : 128);
	return true;
}

static bool
in_cidr(const HttpAddr *addr, const char *cidr)
{
	HttpAddr	net;
	int			bits;

	return parse_net(cidr, &net, &bits) && in_net(addr, &net, bits);
}

/*
 * Why an address is not a public one, or NULL.  IPv4-mapped IPv6
 * addresses are judged by their IPv4 address.
 */
static const char *
inner_address(const HttpAddr *addr)
{
	static const struct
	{
		const char *net;
		const char *why;
	}			inner[] = {
		{"0.0.0.0/8", "unspecified"},
		{"10.0.0.0/8", "private"},
		{"100.64.0.0/10", "shared (carrier-grade NAT)"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local (cloud metadata)"},
		{"172.16.0.0/12", "private"},
		{"192.0.0.0/24", "reserved"},
		{"192.168.0.0/16", "private"},
		{"198.18.0.0/15", "reserved"},
		{"224.0.0.0/3", "multicast or reserved"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"64:ff9b::/96", "translated"},
		{"fc00::/7", "private"},
		{"fe80::/10", "link-local"},
		{"ff00::/8", "multicast"},
	};
	HttpAddr	v4;

	if (addr->family == AF_INET6)
	{
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(addr->a, mapped, 12) == 0)
		{
			memset(&v4, 0, sizeof(v4));
			v4.family = AF_INET;
			memcpy(v4.a, addr->a + 12, 4);
			addr = &v4;
		}
	}
	for (int i = 0; i < (int) lengthof(inner); i++)
		if (in_cidr(addr, inner[i].net))
			return inner[i].why;
	return NULL;
}

/* one entry of workflows.http_allowed_hosts */
typedef struct HttpAllow
{
	char	   *name;			/* lower case: "*", "*.domain" or a host name;
								 * NULL: an address or network */
	HttpAddr	net;
	int			bits;
} HttpAllow;

/*
 * workflows.http_allowed_hosts, parsed.  A call parses it when it starts,
 * so that libcurl's open-socket callback allocates nothing.
 */
static List *
parse_policy(void)
{
	List	   *entries = NIL;
	char	   *copy = pstrdup(wf_http_allowed_hosts ? wf_http_allowed_hosts : "");
	char	   *tok;
	char	   *save;

	for (tok = strtok_r(copy, ", \t\n", &save); tok; tok = strtok_r(NULL, ", \t\n", &save))
	{
		HttpAllow  *e = palloc0(sizeof(HttpAllow));

		if (!parse_net(tok, &e->net, &e->bits))
			e->name = ascii_case(tok, false);
		entries = lappend(entries, e);
	}
	return entries;
}

/* is the URL's host (a name or an address literal) listed? */
static bool
host_allowed(List *policy, const char *host)
{
	char	   *h = ascii_case(host, false);
	HttpAddr	addr;
	bool		literal = parse_addr(h, &addr);
	ListCell   *lc;

	foreach(lc, policy)
	{
		HttpAllow  *e = lfirst(lc);

		if (e->name != NULL && strcmp(e->name, "*") == 0)
			return true;
		if (literal)
		{
			if (e->name == NULL && in_net(&addr, &e->net, e->bits))
				return true;
		}
		else if (e->name != NULL && strncmp(e->name, "*.", 2) == 0)
		{
			size_t		hl = strlen(h),
						el = strlen(e->name + 1);

			if (hl > el && strcmp(h + hl - el, e->name + 1) == 0)
				return true;
		}
		else if (e->name != NULL && strcmp(e->name, h) == 0)
			return true;
	}
	return false;
}

/* may an inner address be connected to?  Only an address or network entry says so */
static bool
inner_allowed(List *policy, const HttpAddr *addr)
{
	ListCell   *lc;

	foreach(lc, policy)
	{
		HttpAllow  *e = lfirst(lc);

		if (e->name == NULL && in_net(addr, &e->net, e->bits))
			return true;
	}
	return false;
}

/* the host of a URL, or an error; also checks the scheme */
static char *
url_host(const char *url, char **scheme_out)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *scheme = NULL;
	char	   *result;
	CURLUcode	rc;

	if (u == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	if (rc == CURLUE_OK)
		rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (rc != CURLUE_OK || host == NULL ||
		(strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
	{
		curl_free(host);
		curl_free(scheme);
		curl_url_cleanup(u);
		return NULL;
	}
	result = pstrdup(host);
	if (scheme_out)
		*scheme_out = pstrdup(scheme);
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(u);
	return result;
}

static void
check_url(const char *url)
{
	char	   *host = url_host(url, NULL);

	if (host == NULL)
		http_error(psprintf("\"url\" is not an http or https URL: \"%s\"", url));
	if (!host_allowed(parse_policy(), host))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("HTTP requests to host \"%s\" are not allowed", host),
				 errhint("A superuser lists the hosts steps may call in workflows.http_allowed_hosts.")));
}

/* ---- the request ---- */

static int64
request_timeout(JsonbValue *v)
{
	int64		ms;
	const char *problem = wf_duration_ms(v, &ms);	/* as a step's "timeout" */

	if (problem != NULL)
		http_error(psprintf("\"timeout\" %s", problem));
	if (ms <= 0)
		http_error("\"timeout\" must be positive");
	return ms;
}

static HttpRequest *
parse_request(Jsonb *request)
{
	HttpRequest *r = palloc0(sizeof(HttpRequest));
	JsonbIterator *it;
	JsonbValue	k,
				v;
	JsonbIteratorToken tok;

	r->timeout_ms = -1;
	if (request == NULL || !JB_ROOT_IS_OBJECT(request) || JB_ROOT_IS_SCALAR(request))
		http_error("the request must be a JSON object");

	it = JsonbIteratorInit(&request->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = jstr(&k);
		tok = JsonbIteratorNext(&it, &v, true);
		if (strcmp(key, "method") == 0)
		{
			static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
			bool		ok = false;

			if (v.type != jbvString)
				http_error("\"method\" must be a string");
			r->method = ascii_case(jstr(&v), true);
			for (int i = 0; i < (int) lengthof(methods); i++)
				ok |= (strcmp(r->method, methods[i]) == 0);
			if (!ok)
				http_error(psprintf("\"method\" must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, not \"%s\"",
									r->method));
		}
		else if (strcmp(key, "url") == 0)
		{
			if (v.type != jbvString)
				http_error("\"url\" must be a string");
			r->url = jstr(&v);
		}
		else if (strcmp(key, "headers") == 0)
		{
			JsonbIterator *hit;
			JsonbValue	hk,
						hv;

			if (v.type == jbvNull)
				continue;
			if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
				http_error("\"headers\" must be a JSON object");
			hit = JsonbIteratorInit(v.val.binary.data);
			while ((tok = JsonbIteratorNext(&hit, &hk, true)) != WJB_DONE)
			{
				HttpHeader *h;

				if (tok != WJB_KEY)
					continue;
				h = palloc0(sizeof(HttpHeader));
				h->name = jstr(&hk);
				if (!valid_header_name(h->name))
					http_error(psprintf("header name \"%s\" is not valid", h->name));
				if (pg_strcasecmp(h->name, "Idempotency-Key") == 0)
					http_error("the Idempotency-Key header is set by the engine");
				(void) JsonbIteratorNext(&hit, &hv, true);
				if (hv.type == jbvString)
				{
					h->value = jstr(&hv);
					if (!wf_http_header_value_valid(h->value))
						http_error(psprintf("the value of header \"%s\" contains a control character", h->name));
				}
				else if (hv.type == jbvBinary && JsonContainerIsObject(hv.val.binary.data))
				{
					Jsonb	   *obj = JsonbValueToJsonb(&hv);
					JsonbValue *s = getKeyJsonValueFromContainer(&obj->root, "secret", 6, NULL);

					if (s == NULL || s->type != jbvString || JsonContainerSize(&obj->root) != 1)
						http_error(psprintf("the value of header \"%s\" must be a string or {\"secret\": \"<name>\"}", h->name));
					h->secret = jstr(s);
				}
				else
					http_error(psprintf("the value of header \"%s\" must be a string or {\"secret\": \"<name>\"}", h->name));
				r->headers = lappend(r->headers, h);
			}
		}
		else if (strcmp(key, "body") == 0)
		{
			if (v.type == jbvNull)
				continue;
			if (v.type == jbvString)
			{
				r->body = jstr(&v);
				r->bodylen = v.val.string.len;
			}
			else
			{
				Jsonb	   *b = JsonbValueToJsonb(&v);

				r->body = JsonbToCString(NULL, &b->root, VARSIZE(b));
				r->bodylen = strlen(r->body);
				r->body_json = true;
			}
		}
		else if (strcmp(key, "timeout") == 0)
			r->timeout_ms = request_timeout(&v);
		else if (strcmp(key, "followRedirects") == 0)
		{
			if (v.type != jbvBool)
				http_error("\"followRedirects\" must be true or false");
			r->follow = v.val.boolean;
		}
		else if (strcmp(key, "retryOn") == 0)
		{
			JsonbIterator *rit;
			JsonbValue	rv;

			if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
				http_error("\"retryOn\" must be an array of HTTP status codes");
			rit = JsonbIteratorInit(v.val.binary.data);
			while ((tok = JsonbIteratorNext(&rit, &rv, true)) != WJB_DONE)
			{
				int			code;

				if (tok != WJB_ELEM)
					continue;
				if (rv.type != jbvNumeric)
					http_error("\"retryOn\" must be an array of HTTP status codes");
				code = DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(rv.val.numeric)));
				if (code < 400 || code > 599)
					http_error("\"retryOn\" lists status codes from 400 to 599");
				r->retry_on = lappend_int(r->retry_on, code);
			}
		}
		else
			http_error(psprintf("\"%s\" is not a known key (method, url, headers, body, timeout, followRedirects, retryOn)", key));
	}
	if (r->url == NULL)
		http_error("\"url\" is required");
	if (r->method == NULL)
		r->method = pstrdup("GET");
	if (r->body != NULL && (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0))
		http_error(psprintf("a %s request has no body", r->method));
	return r;
}

/* at the call, inside the replay: refuse a bad request before anything ran */
static void
http_validate(Jsonb *request)
{
	HttpRequest *r = parse_request(request);
	ListCell   *lc;

	check_url(r->url);
	foreach(lc, r->headers)
	{
		HttpHeader *h = lfirst(lc);

		if (h->secret != NULL && !wf_secret_name_valid(h->secret))
			http_error(psprintf("\"%s\" is not a valid secret name", h->secret));
	}
}

/*
 * In the executor's transaction that records the attempt as started:
 * resolve secrets (the owner's), decide the timeout.
 */
static void
http_prepare(WfStepCall *call)
{
	MemoryContext old = MemoryContextSwitchTo(call->cxt);
	HttpCall   *hc = palloc0(sizeof(HttpCall));
	HttpRequest *r = parse_request(call->request);
	ListCell   *lc;

	hc->call = call;
	hc->req = r;
	check_url(r->url);
	foreach(lc, r->headers)
	{
		HttpHeader *h = lfirst(lc);
		char	   *value = h->value;

		if (h->secret != NULL)
			value = wf_secret_value(call->owner, h->secret);
		hc->lines = lappend(hc->lines, psprintf("%s: %s", h->name, value));
	}
	if (r->body_json)
	{
		bool		has_type = false;

		foreach(lc, r->headers)
			has_type |= (pg_strcasecmp(((HttpHeader *) lfirst(lc))->name, "Content-Type") == 0);
		if (!has_type)
			hc->lines = lappend(hc->lines, pstrdup("Content-Type: application/json"));
	}
	{
		/* the same on every attempt; bytes that could break the line are escaped */
		StringInfoData key;
		const char *parts[2] = {call->instance_id, call->step_key};

		initStringInfo(&key);
		appendStringInfoString(&key, "Idempotency-Key: ");
		for (int i = 0; i < 2; i++)
		{
			if (i == 1)
				appendStringInfoChar(&key, '/');
			for (const unsigned char *p = (const unsigned char *) parts[i]; *p; p++)
			{
				if (*p <= 0x20 || *p >= 0x7f || *p == '%' || *p == '/')
					appendStringInfo(&key, "%%%02X", *p);
				else
					appendStringInfoChar(&key, *p);
			}
		}
		hc->lines = lappend(hc->lines, key.data);
	}
	hc->url = r->url;
	if (r->timeout_ms > 0)
		call->timeout_ms = r->timeout_ms;
	else if (call->timeout_ms <= 0)
		call->timeout_ms = WF_HTTP_DEFAULT_TIMEOUT_MS;
	call->private_data = hc;
	MemoryContextSwitchTo(old);
}

/* ---- libcurl callbacks: no palloc that could raise, no ereport ---- */

static bool
append_bytes(HttpCall *hc, StringInfo buf, const char *data, size_t n)
{
	if (buf->len + n + 1 > (Size) buf->maxlen)
	{
		Size		want = Max((Size) buf->maxlen * 2, buf->len + n + 1);
		char	   *p;

		if (want >= MaxAllocSize)
			return false;
		p = MemoryContextAllocExtended(hc->call->cxt, want, MCXT_ALLOC_NO_OOM);
		if (p == NULL)
		{
			hc->oom = true;
			return false;
		}
		memcpy(p, buf->data, buf->len);
		buf->data = p;
		buf->maxlen = want;
	}
	memcpy(buf->data + buf->len, data, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return true;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	HttpCall   *hc = arg;
	size_t		n = size * nmemb;

	if (hc->body.len + n > (size_t) wf_max_output_size)
	{
		hc->too_big = true;
		return 0;
	}
	return append_bytes(hc, &hc->body, data, n) ? n : 0;
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	HttpCall   *hc = arg;
	size_t		n = size * nmemb;

	/* a new response (after "100 Continue"): its headers only */
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
		hc->head.len = 0;
	if (hc->head.len + n > (size_t) wf_max_output_size)
	{
		hc->too_big = true;
		return 0;
	}
	return append_bytes(hc, &hc->head, data, n) ? n : 0;
}

/* every connection: refuse inner addresses before a byte is sent */
static curl_socket_t
on_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *sa)
{
	HttpCall   *hc = arg;
	HttpAddr	addr;
	const char *why;

	memset(&addr, 0, sizeof(addr));
	if (sa->family == AF_INET)
	{
		addr.family = AF_INET;
		memcpy(addr.a, &((struct sockaddr_in *) &sa->addr)->sin_addr, 4);
	}
	else if (sa->family == AF_INET6)
	{
		addr.family = AF_INET6;
		memcpy(addr.a, &((struct sockaddr_in6 *) &sa->addr)->sin6_addr, 16);
	}
	else
	{
		hc->refused = "an address of an unknown family";
		return CURL_SOCKET_BAD;
	}
	why = inner_address(&addr);
	if (why != NULL && !inner_allowed(hc->policy, &addr))
	{
		char		text[INET6_ADDRSTRLEN];
		char	   *msg;

		inet_ntop(addr.family, addr.a, text, sizeof(text));
		msg = MemoryContextAllocExtended(hc->call->cxt, 200, MCXT_ALLOC_NO_OOM);
		if (msg != NULL)
			snprintf(msg, 200, "address %s is %s and not listed in workflows.http_allowed_hosts",
					 text, why);
		hc->refused = msg ? msg : "an inner address";
		return CURL_SOCKET_BAD;
	}
	return socket(sa->family, sa->socktype, sa->protocol);
}

static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsocks; i++)
		if (socks[i].sock == s)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsocks)
			socks[i] = socks[--nsocks];
		return 0;
	}
	if (i == nsocks)
	{
		if (nsocks == maxsocks)
		{
			int			want = maxsocks ? maxsocks * 2 : 64;
			HttpSock   *p = MemoryContextAllocExtended(TopMemoryContext, want * sizeof(HttpSock),
													   MCXT_ALLOC_NO_OOM);

			if (p == NULL)
				return -1;
			if (socks != NULL)
			{
				memcpy(p, socks, nsocks * sizeof(HttpSock));
				pfree(socks);
			}
			socks = p;
			maxsocks = want;
		}
		nsocks++;
	}
	socks[i].sock = s;
	socks[i].what = what;
	return 0;
}

static int
on_timer(CURLM *m, long timeout_ms, void *userp)
{
	curl_due = timeout_ms < 0 ? 0 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

static bool
policy_changed(void)
{
	return multi_policy == NULL ||
		strcmp(multi_policy, wf_http_allowed_hosts ? wf_http_allowed_hosts : "") != 0;
}

/*
 * The multi handle, made anew (closing every cached connection) when
 * workflows.http_allowed_hosts changed and no transfer is in flight.
 */
static void
ensure_multi(void)
{
	static bool global_done = false;

	if (multi != NULL && (nactive > 0 || !policy_changed()))
		return;
	if (!global_done)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			elog(ERROR, "could not initialize libcurl");
		global_done = true;
	}
	if (multi != NULL)
		curl_multi_cleanup(multi);
	if (multi_policy != NULL)
		pfree(multi_policy);
	multi_policy = MemoryContextStrdup(TopMemoryContext,
									   wf_http_allowed_hosts ? wf_http_allowed_hosts : "");
	nsocks = 0;
	curl_due = 0;
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "could not initialize libcurl");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
}

/* start the request to hc->url; false: it could not even start */
static bool
start_request(HttpCall *hc)
{
	HttpRequest *r = hc->req;
	CURL	   *e = curl_easy_init();
	long		left = (long) Max(1, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), hc->deadline));

	if (e == NULL)
		return false;
	hc->easy = e;
	hc->body.len = 0;
	hc->head.len = 0;
	hc->errbuf[0] = '\0';
	curl_easy_setopt(e, CURLOPT_PRIVATE, hc);
	curl_easy_setopt(e, CURLOPT_URL, hc->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, Min(left, 10000L));
	curl_easy_setopt(e, CURLOPT_USERAGENT, "workflows/" WF_EXTVERSION);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, hc->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, hc);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, hc);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, hc);
	if (strcmp(r->method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (strcmp(r->method, "GET") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	if (r->body != NULL)
	{
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long) r->bodylen);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, r->body);
	}
	if (hc->slist == NULL)
	{
		ListCell   *lc;

		foreach(lc, hc->lines)
		{
			struct curl_slist *l = curl_slist_append(hc->slist, (char *) lfirst(lc));

			if (l == NULL)
			{
				curl_easy_cleanup(e);
				hc->easy = NULL;
				return false;
			}
			hc->slist = l;
		}
		/* no "Expect: 100-continue" round trip */
		hc->slist = curl_slist_append(hc->slist, "Expect:");
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, hc->slist);
	/* the policy changed under transfers in flight: no connection of before */
	if (policy_changed())
	{
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	}
	if (curl_multi_add_handle(multi, e) != CURLM_OK)
	{
		curl_easy_cleanup(e);
		hc->easy = NULL;
		return false;
	}
	nactive++;
	return true;
}

static void
end_request(HttpCall *hc)
{
	if (hc->easy != NULL)
	{
		curl_multi_remove_handle(multi, hc->easy);
		curl_easy_cleanup(hc->easy);
		hc->easy = NULL;
		nactive--;
	}
}

static void
release(HttpCall *hc)
{
	end_request(hc);
	if (hc->slist != NULL)
	{
		curl_slist_free_all(hc->slist);
		hc->slist = NULL;
	}
	finished = list_delete_ptr(finished, hc);
}

static bool
http_start(WfStepCall *call, WfStepResult *result)
{
	HttpCall   *hc = call->private_data;
	MemoryContext old = MemoryContextSwitchTo(call->cxt);

	ensure_multi();
	hc->policy = parse_policy();
	initStringInfo(&hc->body);
	initStringInfo(&hc->head);
	hc->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), call->timeout_ms);
	MemoryContextSwitchTo(old);
	if (!start_request(hc))
	{
		release(hc);
		result->ok = false;
		result->sqlerrcode = ERRCODE_OUT_OF_MEMORY;
		result->message = "could not start the HTTP request";
		result->retryable = true;
		return false;
	}
	return true;
}

static int
http_wait(WfWaitSocket *sockets, int max, long *timeout_ms)
{
	int			n = 0;

	if (multi == NULL)
		return 0;
	for (int i = 0; i < nsocks && n < max; i++)
	{
		sockets[n].sock = socks[i].sock;
		sockets[n].events = ((socks[i].what & CURL_POLL_IN) ? WF_WAIT_READ : 0) |
			((socks[i].what & CURL_POLL_OUT) ? WF_WAIT_WRITE : 0);
		n++;
	}
	if (curl_due != 0)
		*timeout_ms = Min(*timeout_ms,
						  Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), curl_due)));
	return n;
}

static void
http_drive(const WfWaitSocket *ready, int nready)
{
	int			running;
	CURLMsg    *msg;
	int			left;

	if (multi == NULL)
		return;
	for (int i = 0; i < nready; i++)
		curl_multi_socket_action(multi, ready[i].sock,
								 ((ready[i].events & WF_WAIT_READ) ? CURL_CSELECT_IN : 0) |
								 ((ready[i].events & WF_WAIT_WRITE) ? CURL_CSELECT_OUT : 0),
								 &running);
	/* its timers, when due */
	if (curl_due != 0 && curl_due <= GetCurrentTimestamp())
	{
		curl_due = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		HttpCall   *hc;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &hc);
		hc->code = msg->data.result;
		hc->done = true;
		finished = lappend(finished, hc);
	}
}

/* ---- the result ---- */

static Jsonb *
response_headers(HttpCall *hc)
{
	JsonbParseState *st = NULL;
	char	   *line;
	char	   *save;
	char	   *copy = pnstrdup(hc->head.data, hc->head.len);
	JsonbValue *res;
	List	   *names = NIL;
	List	   *values = NIL;

	for (line = strtok_r(copy, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save))
	{
		char	   *colon = strchr(line, ':');
		char	   *value;

		if (colon == NULL || strncmp(line, "HTTP/", 5) == 0)
			continue;
		*colon = '\0';
		value = colon + 1;
		while (*value == ' ' || *value == '\t')
			value++;
		if (pg_verifymbstr(line, strlen(line), true) && pg_verifymbstr(value, strlen(value), true))
		{
			names = lappend(names, ascii_case(line, false));
			values = lappend(values, value);
		}
	}
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < list_length(names); i++)
	{
		JsonbValue	k,
					v;

		k.type = jbvString;
		k.val.string.val = list_nth(names, i);
		k.val.string.len = strlen(k.val.string.val);
		v.type = jbvString;
		v.val.string.val = list_nth(values, i);
		v.val.string.len = strlen(v.val.string.val);
		pushJsonbValue(&st, WJB_KEY, &k);
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

static const char *
header_value(Jsonb *headers, const char *name)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&headers->root, name, strlen(name), NULL);

	return (v && v->type == jbvString) ? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
}

/* the body as a JSON value: parsed JSON, text, or base64 of other bytes */
static JsonbValue
body_value(HttpCall *hc, Jsonb *headers, bool *base64)
{
	JsonbValue	v;
	const char *type = header_value(headers, "content-type");

	*base64 = false;
	v.type = jbvNull;
	if (hc->body.len == 0)
		return v;
	if (!pg_verifymbstr(hc->body.data, hc->body.len, true) || memchr(hc->body.data, '\0', hc->body.len))
	{
		int			len = pg_b64_enc_len(hc->body.len);
		char	   *enc = palloc(len + 1);

		len = pg_b64_encode(hc->body.data, hc->body.len, enc, len);
		v.type = jbvString;
		v.val.string.val = enc;
		v.val.string.len = Max(len, 0);
		*base64 = true;
		return v;
	}
	if (type != NULL && strstr(type, "json") != NULL)
	{
		MemoryContext cxt = CurrentMemoryContext;
		Jsonb	   *parsed = NULL;

		/* no transaction is open: the parser's errors are caught here */
		PG_TRY();
		{
			parsed = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(hc->body.data)));
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			FlushErrorState();
			parsed = NULL;
		}
		PG_END_TRY();
		if (parsed != NULL)
		{
			v.type = jbvBinary;
			v.val.binary.data = &parsed->root;
			v.val.binary.len = VARSIZE(parsed) - VARHDRSZ;
			return v;
		}
	}
	v.type = jbvString;
	v.val.string.val = hc->body.data;
	v.val.string.len = hc->body.len;
	return v;
}

static Jsonb *
response_jsonb(long status, Jsonb *headers, JsonbValue body, bool base64)
{
	JsonbParseState *st = NULL;
	JsonbValue	k,
				v;
	JsonbValue *res;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	k.type = jbvString;
	k.val.string.val = "status";
	k.val.string.len = 6;
	pushJsonbValue(&st, WJB_KEY, &k);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(status);
	pushJsonbValue(&st, WJB_VALUE, &v);
	k.val.string.val = "headers";
	k.val.string.len = 7;
	pushJsonbValue(&st, WJB_KEY, &k);
	v.type = jbvBinary;
	v.val.binary.data = &headers->root;
	v.val.binary.len = VARSIZE(headers) - VARHDRSZ;
	pushJsonbValue(&st, WJB_VALUE, &v);
	k.val.string.val = base64 ? "bodyBase64" : "body";
	k.val.string.len = strlen(k.val.string.val);
	pushJsonbValue(&st, WJB_KEY, &k);
	pushJsonbValue(&st, WJB_VALUE, &body);
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* Retry-After: seconds or an HTTP date; 0 if absent or unreadable */
static int64
retry_after_ms(Jsonb *headers)
{
	const char *v = header_value(headers, "retry-after");
	char	   *end;
	long		secs;

	if (v == NULL)
		return 0;
	secs = strtol(v, &end, 10);
	if (end != v && *end == '\0' && secs >= 0)
		return (int64) Min(secs, 365L * 24 * 3600) * 1000;
	{
		time_t		t = curl_getdate(v, NULL);
		time_t		now = time(NULL);

		if (t > now)
			return (int64) (t - now) * 1000;
	}
	return 0;
}

static void
fail(WfStepResult *res, int sqlerrcode, bool retryable, const char *message, const char *detail)
{
	res->ok = false;
	res->sqlerrcode = sqlerrcode;
	res->retryable = retryable;
	res->message = pstrdup(message);
	res->detail = detail ? pstrdup(detail) : NULL;
}

/* a redirect to follow: start it; false if this response is the result */
static bool
follow_redirect(HttpCall *hc, long status, Jsonb *headers, WfStepResult *res)
{
	const char *location = header_value(headers, "location");
	CURLU	   *u;
	char	   *next = NULL;
	char	   *host;

	if (!hc->req->follow || location == NULL ||
		!(status == 301 || status == 302 || status == 303 || status == 307 || status == 308))
		return false;
	if (++hc->redirects > WF_HTTP_MAX_REDIRECTS)
	{
		fail(res, ERRCODE_WF_HTTP_FAILED, false,
			 psprintf("more than %d redirects", WF_HTTP_MAX_REDIRECTS), NULL);
		return true;
	}
	u = curl_url();
	if (u == NULL || curl_url_set(u, CURLUPART_URL, hc->url, 0) != CURLUE_OK ||
		curl_url_set(u, CURLUPART_URL, location, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_URL, &next, 0) != CURLUE_OK)
	{
		if (u)
			curl_url_cleanup(u);
		fail(res, ERRCODE_WF_HTTP_FAILED, false, "the redirect's Location is not a URL", NULL);
		return true;
	}
	hc->url = pstrdup(next);
	curl_free(next);
	curl_url_cleanup(u);
	host = url_host(hc->url, NULL);
	if (host == NULL || !host_allowed(hc->policy, host))
	{
		fail(res, ERRCODE_INSUFFICIENT_PRIVILEGE, false,
			 host ? psprintf("redirect to host \"%s\" refused: not allowed by workflows.http_allowed_hosts", host)
			 : "redirect to a URL that is not http or https refused",
			 NULL);
		return true;
	}
	/* 303, and 301/302 after a POST, become a GET without a body */
	if (status == 303 || ((status == 301 || status == 302) && strcmp(hc->req->method, "POST") == 0))
	{
		hc->req->method = "GET";
		hc->req->body = NULL;
	}
	end_request(hc);
	hc->done = false;
	finished = list_delete_ptr(finished, hc);
	if (!start_request(hc))
	{
		fail(res, ERRCODE_OUT_OF_MEMORY, true, "could not start the HTTP request", NULL);
		return true;
	}
	return false;
}

static bool
http_poll(WfStepCall *call, WfStepResult *res)
{
	HttpCall   *hc = call->private_data;
	MemoryContext old;
	long		status = 0;
	char	   *host;

	if (!hc->done)
		return false;
	old = MemoryContextSwitchTo(call->cxt);
	memset(res, 0, sizeof(*res));
	host = url_host(hc->url, NULL);
	curl_easy_getinfo(hc->easy, CURLINFO_RESPONSE_CODE, &status);

	if (hc->refused != NULL)
		fail(res, ERRCODE_INSUFFICIENT_PRIVILEGE, false,
			 psprintf("HTTP request to host \"%s\" refused: %s", host, hc->refused), NULL);
	else if (hc->too_big)
		fail(res, ERRCODE_WF_LIMIT_EXCEEDED, false,
			 psprintf("HTTP response from host \"%s\" is larger than workflows.max_output_size (%d bytes)",
					  host, wf_max_output_size), NULL);
	else if (hc->oom)
		fail(res, ERRCODE_OUT_OF_MEMORY, true, "out of memory reading the HTTP response", NULL);
	else if (hc->code == CURLE_OPERATION_TIMEDOUT)
		fail(res, ERRCODE_WF_STEP_TIMEOUT, true,
			 psprintf("HTTP request to host \"%s\" timed out after " INT64_FORMAT " ms",
					  host, call->timeout_ms), NULL);
	else if (hc->code != CURLE_OK)
		fail(res, ERRCODE_CONNECTION_FAILURE, true,
			 psprintf("HTTP request to host \"%s\" failed: %s", host,
					  hc->errbuf[0] ? hc->errbuf : curl_easy_strerror(hc->code)), NULL);
	else
	{
		Jsonb	   *headers = response_headers(hc);
		bool		base64;
		JsonbValue	body;

		if (follow_redirect(hc, status, headers, res))
			goto done;
		if (!hc->done)
		{
			/* following a redirect */
			MemoryContextSwitchTo(old);
			return false;
		}
		body = body_value(hc, headers, &base64);
		res->attempt_detail = wf_cstring_jsonb(psprintf("{\"httpStatus\": %ld}", status));
		if (status < 400)
		{
			res->ok = true;
			res->output = response_jsonb(status, headers, body, base64);
		}
		else
		{
			bool		retry = (status >= 500 || status == 408 || status == 429 ||
								 list_member_int(hc->req->retry_on, (int) status));
			char	   *quoted = NULL;

			if (body.type == jbvString && !base64)
				quoted = pnstrdup(body.val.string.val, Min(body.val.string.len, WF_HTTP_ERROR_BODY));
			else if (body.type == jbvBinary)
			{
				char	   *s = JsonbToCString(NULL, body.val.binary.data, body.val.binary.len);

				quoted = pnstrdup(s, Min((int) strlen(s), WF_HTTP_ERROR_BODY));
			}
			if (quoted != NULL)
				quoted = pnstrdup(quoted, pg_mbcliplen(quoted, strlen(quoted), WF_HTTP_ERROR_BODY));
			fail(res, ERRCODE_WF_HTTP_FAILED, retry,
				 psprintf("HTTP request to host \"%s\" returned status %ld", host, status),
				 quoted ? psprintf("Response body: %s", quoted) : NULL);
			if (status == 429 || status == 503)
			{
				res->retry_after_ms = retry_after_ms(headers);
				if (res->retry_after_ms > 0)
					res->attempt_detail =
						wf_cstring_jsonb(psprintf("{\"httpStatus\": %ld, \"retryAfterMs\": " INT64_FORMAT "}",
												  status, res->retry_after_ms));
			}
		}
	}
done:
	release(hc);
	MemoryContextSwitchTo(old);
	return true;
}

static void
http_cancel(WfStepCall *call)
{
	HttpCall   *hc = call->private_data;

	if (hc != NULL)
		release(hc);
}

const WfStepKind wf_http_kind = {
	.abi = WF_STEP_KIND_ABI,
	.name = "http",
	.validate = http_validate,
	.prepare = http_prepare,
	.start = http_start,
	.poll = http_poll,
	.cancel = http_cancel,
	.wait = http_wait,
	.drive = http_drive,
	.required_role = "workflows_http",
};
