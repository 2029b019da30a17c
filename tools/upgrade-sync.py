#!/usr/bin/env python3
"""tools/upgrade-sync.py -- keep the unreleased upgrade script's functions and
views in step with sql/install/.

    python3 tools/upgrade-sync.py FROM TO      e.g.  0.1 0.2

While version TO is being developed, its functions and views live in
sql/install/ (the fresh install) and must also be (re)created by
sql/workflows--FROM--TO.sql (the update of a FROM database).  Writing each
body twice by hand lets the two drift; test/t/011_upgrade.pl catches that,
this fixes it:

  - every function or view of the upgrade script that sql/install/ also
    defines gets sql/install/'s text (CREATE stays CREATE, CREATE OR REPLACE
    stays CREATE OR REPLACE);
  - a function or view whose text differs from the FROM release's install
    script but which the upgrade script does not create yet is appended in a
    last section, as CREATE OR REPLACE (or CREATE, if FROM did not have it).

It only prints, for a human to check, what CREATE OR REPLACE cannot do (a
changed result type or argument names needs a DROP first).  Run `make`
first: it reads the built sql/workflows--TO.sql.  Never run it on a released
upgrade script.
"""
import re
import sys
from pathlib import Path

HEAD = re.compile(r'^CREATE (OR REPLACE )?(FUNCTION|VIEW) (workflows\.\w+)(\([^)]*\))?', re.M)


def blocks(text):
    """{(kind, name, args): (start, end, text)} of every function and view."""
    found = {}
    for m in HEAD.finditer(text):
        kind, name = m.group(2), m.group(3)
        args = re.sub(r'\s+', ' ', m.group(4) or '')
        # argument types only: names and defaults do not identify a function
        start = m.start()
        if kind == 'FUNCTION':
            body = text.find('$$', start)
            nxt = HEAD.search(text, m.end())
            # a C function has no body: a $$ after its first ; is another statement's
            semi = text.find(';', start)
            if body != -1 and body < semi and (nxt is None or body < nxt.start()):
                end = text.index('$$;', text.index('$$', body + 2)) + 3
            else:
                end = text.index(';', start) + 1
        else:
            end = text.index(';\n', start) + 1
        found[(kind, name, args)] = (start, end, text[start:end])
    return found


def normal(block):
    return re.sub(r'^CREATE (OR REPLACE )?', 'CREATE ', block)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    old, new = sys.argv[1], sys.argv[2]
    sql = Path(__file__).resolve().parent.parent / 'sql'
    fresh = blocks((sql / f'workflows--{new}.sql').read_text())
    released = blocks((sql / f'workflows--{old}.sql').read_text())
    path = sql / f'workflows--{old}--{new}.sql'
    text = path.read_text()
    mine = blocks(text)

    # replace, from the end so that offsets stay valid
    for key, (start, end, block) in sorted(mine.items(), key=lambda kv: -kv[1][0]):
        if key not in fresh:
            continue
        replace = block.startswith('CREATE OR REPLACE')
        body = normal(fresh[key][2])
        if replace:
            body = body.replace('CREATE ', 'CREATE OR REPLACE ', 1)
        text = text[:start] + body + text[end:]

    missing = [k for k, v in fresh.items()
               if k not in mine and (k not in released or normal(released[k][2]) != normal(v[2]))]
    if missing:
        header = '-- functions and views changed in this version (tools/upgrade-sync.py)\n'
        text = text.rstrip('\n') + '\n' + ('' if header in text else '\n' + header)
        for key in missing:
            body = normal(fresh[key][2])
            if key in released:
                body = body.replace('CREATE ', 'CREATE OR REPLACE ', 1)
            text += '\n' + body + '\n'
            print(f'appended {key[0].lower()} {key[1]}{key[2]}'
                  + ('' if key in released else ' (new: add its GRANT/COMMENT by hand)'))
    path.write_text(text)


if __name__ == '__main__':
    main()
