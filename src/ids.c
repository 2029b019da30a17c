/*-------------------------------------------------------------------------
 *
 * ids.c
 *	  The ids the extension makes for instances created without one.
 *
 * A generated id is a UUID of version 7 (RFC 9562): 48 bits of the Unix
 * time in milliseconds, then 12 bits of the sub-millisecond fraction, then
 * 62 random bits.  It prints and compares like any UUID, and it is as hard
 * to guess as a random one within a millisecond; what the time in front
 * buys is where it lands in the indexes.  Every table is keyed by instance
 * id first, so a random id puts each new instance, and each of its steps,
 * on a page of the primary keys nobody touched recently: once the indexes
 * outgrow shared buffers every create and every first step reads a page
 * and, after each checkpoint, writes a full-page image of it to the WAL.
 * Ids made in the same millisecond go to the same few pages at the right
 * end of each index instead (bench/README.md, "A 30-minute sustained run").
 *
 * IDENTIFICATION
 *	  src/ids.c
 *
 *-------------------------------------------------------------------------
 */
#include "workflows.h"

#include "datatype/timestamp.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* microseconds from the Unix epoch to PostgreSQL's */
#define WF_UNIX_TO_PG_US \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC)

/*
 * A new instance id, palloc'd in the current memory context: the canonical
 * text form of a version-7 UUID (36 characters).
 */
char *
wf_new_instance_id(void)
{
	pg_uuid_t	u;
	int64		us = (int64) GetCurrentTimestamp() + WF_UNIX_TO_PG_US;
	uint64		ms = (uint64) (us / 1000);
	uint32		frac = (uint32) ((us % 1000) * 4096 / 1000);	/* 12 bits */

	if (!pg_strong_random(u.data + 8, 8))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	for (int i = 0; i < 6; i++)
		u.data[i] = (uint8) (ms >> (40 - 8 * i));
	u.data[6] = 0x70 | (uint8) (frac >> 8);	/* version 7 */
	u.data[7] = (uint8) frac;
	u.data[8] = 0x80 | (u.data[8] & 0x3f);	/* variant 10 */

	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&u)));
}
