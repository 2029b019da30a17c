-- bench/workloads/report.sql -- the results table (markdown) from the raw
-- measurements of bench/run.sh.
--   bench/run.sh replaces @RAW@ and @GOALS@ with the files' paths
-- raw:   workload, metric, kind (value | ceiling), run, value  (TSV)
-- goals: workload, metric, goal text, op, threshold           (TSV)
--   op: "<=" / ">=" compare the median with the threshold; "ratio>=" /
--   "ratio<=" compare median / ceiling with the threshold.

\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only on
SET client_min_messages = warning;

CREATE TEMP TABLE raw (ord serial, workload text, metric text, kind text, run int, value float8);
\copy raw (workload, metric, kind, run, value) FROM '@RAW@'
CREATE TEMP TABLE goals (workload text, metric text, goal text, op text, threshold float8);
\copy goals FROM '@GOALS@'

-- three significant digits, thousands separated
CREATE FUNCTION pg_temp.f(x float8) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN x IS NULL OR x = 'NaN' THEN '-'
        WHEN x = 0 THEN '0'
        WHEN abs(x) >= 1000 THEN to_char(round(x::numeric), 'FM999,999,999,999,990')
        WHEN abs(x) >= 100 THEN round(x::numeric)::text
        ELSE round(x::numeric, greatest(0, 2 - floor(log(abs(x)::numeric)))::int)::text
    END
$$;

WITH v AS (
    SELECT workload, metric, min(ord) AS ord, count(*) AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS med,
           min(value) AS lo, max(value) AS hi
      FROM raw WHERE kind = 'value' GROUP BY 1, 2
), c AS (
    SELECT workload, metric, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS med,
           count(*) AS n
      FROM raw WHERE kind = 'ceiling' GROUP BY 1, 2
), r AS (
    -- ratio: the median of the runs' own ratios (each run measures its
    -- ceiling right before the workload), which cancels slow drifts of a
    -- noisy machine better than a ratio of medians
    SELECT v.workload, v.metric,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY v.value / c.value) AS ratio
      FROM raw v JOIN raw c ON c.workload = v.workload AND c.metric = v.metric
                           AND c.run = v.run AND c.kind = 'ceiling'
     WHERE v.kind = 'value' AND c.value <> 0 AND c.value <> 'NaN' AND v.value <> 'NaN'
     GROUP BY 1, 2
), t AS (
    SELECT v.*, c.med AS ceil, g.goal, g.op, g.threshold,
           COALESCE(r.ratio,
                    CASE WHEN c.med IS NOT NULL AND c.med <> 0 THEN v.med / c.med END) AS ratio
      FROM v LEFT JOIN c USING (workload, metric)
             LEFT JOIN r USING (workload, metric)
             LEFT JOIN goals g USING (workload, metric)
)
SELECT line FROM (
    SELECT 0 AS ord, '| workload | metric | median | spread (min-max, runs) | ceiling | ratio | goal | met |' AS line
    UNION ALL
    SELECT 1, '|---|---|---:|---|---:|---:|---|---|'
    UNION ALL
    SELECT 10 + ord, format('| %s | %s | %s | %s | %s | %s | %s | %s |',
        workload, metric, pg_temp.f(med),
        CASE WHEN n > 1 THEN format('%s-%s (%s)', pg_temp.f(lo), pg_temp.f(hi), n)
             ELSE '(1 run)' END,
        pg_temp.f(ceil),
        CASE WHEN ratio IS NULL THEN '' ELSE round(ratio::numeric, 2)::text || 'x' END,
        COALESCE(goal, ''),
        CASE op
            WHEN '<=' THEN CASE WHEN med <= threshold THEN 'yes' ELSE '**NO**' END
            WHEN '>=' THEN CASE WHEN med >= threshold THEN 'yes' ELSE '**NO**' END
            WHEN 'ratio>=' THEN CASE WHEN ratio IS NULL THEN '?'
                                     WHEN ratio >= threshold THEN 'yes' ELSE '**NO**' END
            WHEN 'ratio<=' THEN CASE WHEN ratio IS NULL THEN '?'
                                     WHEN ratio <= threshold THEN 'yes' ELSE '**NO**' END
            ELSE '' END)
      FROM t
) x ORDER BY ord;
