#!/usr/bin/env python3
# Copyright 2026 The shadow-mmu Authors.
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""Checks commit messages the way Cloud Hypervisor's CI does.

    patches/check-commits.py CH_CHECKOUT RANGE

CH's CI runs gitlint (its default rules, configured by the checkout's
`.gitlint`, plus the checkout's own rules in `scripts/gitlint/rules/`) and
dco-check on every commit of a pull request. This script applies the same
rules to the commits in RANGE of the checkout without needing gitlint: the
title length comes from `.gitlint`, the valid components, the body line
limit and its exceptions are read from the rule files themselves, so the
check follows the checkout. It prints one line per violation and exits 1 if
there is any.
"""

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path


def literal(path, name):
    """The literal assigned to `name` anywhere in the Python file `path`."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    return node.value
    raise SystemExit(f"{path}: no assignment to {name}")


def rules(checkout):
    rules_dir = checkout / "scripts/gitlint/rules"
    gitlint = configparser.ConfigParser()
    gitlint.read(checkout / ".gitlint")
    title_max = gitlint.getint("title-max-length", "line-length", fallback=72)
    components = ast.literal_eval(
        literal(rules_dir / "TitleStartsWithComponent.py", "valid_components"))
    body_file = rules_dir / "BodyMaxLineLengthEx.py"
    body_max = ast.literal_eval(literal(body_file, "MAX_LEN"))
    prefixes = ast.literal_eval(literal(body_file, "IGNORE_PREFIXES"))
    link = literal(body_file, "LINK_REGEX")
    link_regex = re.compile(ast.literal_eval(link.args[0]))
    return title_max, set(components), body_max, tuple(prefixes), link_regex


def check(message, author, rules_):
    title_max, components, body_max, prefixes, link_regex = rules_
    lines = message.rstrip("\n").split("\n")
    title, body = lines[0], lines[1:]
    errors = []
    # gitlint's default title rules (T1-T6, T8)
    if len(title) > title_max:
        errors.append(f"title longer than {title_max} characters ({len(title)})")
    if title != title.rstrip():
        errors.append("title ends with whitespace")
    if title != title.lstrip():
        errors.append("title starts with whitespace")
    if title and title[-1] in "?:!.,;":
        errors.append("title ends with punctuation")
    if "\t" in title:
        errors.append("title has a tab")
    if re.search(r"\bWIP\b", title, re.IGNORECASE):
        errors.append("title contains WIP")
    if len(title) < 5:
        errors.append("title shorter than 5 characters")
    # CH's TitleStartsWithComponent
    match = re.match(r"^(.+?):\s(.+)$", title)
    if not match:
        errors.append("title is not 'component: change summary'")
    else:
        for component in re.split(r",\s", match.group(1)):
            if component not in components:
                errors.append(f"invalid component {component!r}")
    # gitlint's default body rules (B2, B4-B6)
    if not body or body[0] != "":
        errors.append("no empty line after the title")
    text = [line for line in body[1:]]
    if not "".join(text).strip():
        errors.append("no body")
    elif len("".join(text)) < 20:
        errors.append("body shorter than 20 characters")
    # CH's BodyMaxLineLengthEx
    in_code = False
    for line in text:
        if line != line.rstrip():
            errors.append(f"body line ends with whitespace: {line!r}")
        fence = line.startswith("```")
        was_in_code = in_code
        if fence:
            in_code = not in_code
        if (len(line) > body_max and not was_in_code and not link_regex.match(line)
                and not line.startswith(prefixes)):
            errors.append(f"body line longer than {body_max} characters: {line!r}")
    # dco-check: signed off by the author
    if f"Signed-off-by: {author}" not in lines:
        errors.append(f"no 'Signed-off-by: {author}'")
    return errors


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().split("\n\n")[1])
    checkout, commit_range = Path(sys.argv[1]), sys.argv[2]
    rules_ = rules(checkout)
    git = ["git", "-C", str(checkout)]
    commits = subprocess.run(git + ["rev-list", "--reverse", commit_range],
                             check=True, capture_output=True, text=True).stdout.split()
    bad = 0
    for commit in commits:
        show = subprocess.run(git + ["show", "-s", "--format=%an <%ae>%x00%B", commit],
                              check=True, capture_output=True, text=True).stdout
        author, message = show.split("\0", 1)
        for error in check(message, author, rules_):
            print(f"{commit[:12]} {message.splitlines()[0]!r}: {error}")
            bad += 1
    if bad:
        sys.exit(1)
    print(f"{len(commits)} commit messages follow Cloud Hypervisor's gitlint rules and are signed off")


if __name__ == "__main__":
    main()
