"""The hot paths' SQL, run on the DBAPI cursor of a SQLAlchemy transaction.

Building a SQLAlchemy Core statement costs ~0.1-0.3 ms of Python per execution (expression objects,
cache keys), and a ranking takes about fifteen statements: that was most of the server's CPU. These
are fixed strings, written once in SQLite's `:name` style and translated to psycopg's `%(name)s`;
they run inside the same transaction (and BEGIN IMMEDIATE / durability settings) as everything else.
The tables are the ones in models.py; JSON columns are text to SQLite and json to PostgreSQL.
"""

from __future__ import annotations

import json
import re

STATEMENTS = {
    "token_user": "SELECT u.id, u.name, u.role, u.active, t.csrf, t.kind, t.expires_at FROM tokens t "
    "JOIN users u ON u.id = t.user_id WHERE t.token_hash = :hash",
    "ranking_by_key": "SELECT id, task_id, ranks, annotator_id FROM rankings WHERE idempotency_key = :key",
    # A retried key's ranking and the user's own ranking of the task (for a revise) in one round trip.
    "key_or_own": "SELECT id, task_id, ranks, annotator_id, idempotency_key, revisable_until, order_shown "
    "FROM rankings WHERE idempotency_key = :key OR (task_id = :task AND annotator_id = :user)",
    "lease_of_task": "SELECT user_id, order_shown, acquired_at FROM leases WHERE task_id = :task",
    # A task's own N (a campaign's) wins over the store's; gold tasks are claimed with n = GOLD_N (no limit).
    "bump": "UPDATE tasks SET n_done = n_done + 1 WHERE id = :task AND n_done < COALESCE(annotators, :n)",
    "insert_ranking": "INSERT INTO rankings (task_id, annotator_id, idempotency_key, ranks, order_shown, seconds, "
    "created_at, revisions) VALUES (:task, :user, :key, :ranks, :order, :seconds, :now, 0) RETURNING id",
    "revise": "UPDATE rankings SET ranks = :ranks, idempotency_key = :key, revisable_until = NULL, "
    "revisions = revisions + 1 WHERE id = :id",
    "release": "UPDATE leases SET user_id = NULL, view_id = NULL, order_shown = NULL, expires_at = 0 "
    "WHERE task_id = :task AND user_id = :user",
    "audit": "INSERT INTO audit_log (at, user_id, action, detail) VALUES (:now, :user, :action, :detail)",
    # The lease this user still holds, extended, in one statement.
    "held": "UPDATE leases SET expires_at = :until WHERE task_id = (SELECT task_id FROM leases WHERE user_id = :user "
    "AND expires_at > :now ORDER BY acquired_at LIMIT 1) RETURNING task_id, view_id, order_shown",
    # Free or expired, and (PostgreSQL, READ COMMITTED: a fresh snapshot for this statement) the holder we
    # skipped past has not just completed the task with the N-th ranking.
    "claim": "UPDATE leases SET user_id = :user, view_id = :view, order_shown = :order, acquired_at = :now, "
    "expires_at = :until WHERE task_id = :task AND (user_id IS NULL OR expires_at <= :now) "
    "AND EXISTS (SELECT 1 FROM tasks WHERE id = :task AND n_done < COALESCE(annotators, :n))",
    # Free tasks at one fill level (below the store's N) this user has not ranked, skipped or flagged: highest
    # priority (acquisition score) first, then oldest; the order of ix_tasks_queue (n_done, priority DESC, id), so
    # no sort. Not gold tasks (their own queue), nor a campaign's that already has its own N.
    "candidates": "SELECT t.id, t.priority FROM tasks t JOIN leases l ON l.task_id = t.id WHERE t.n_done = :level "
    "AND NOT t.is_gold AND (t.annotators IS NULL OR t.annotators > :level) "
    "__free_for_user__ ORDER BY t.priority DESC, t.id LIMIT :limit",
    # Fill levels at or above the store's N: only tasks with a larger N of their own (campaigns, few), found
    # through ix_tasks_annotators rather than by walking every complete task at that level.
    "candidates_above": "SELECT t.id, t.priority FROM tasks t JOIN leases l ON l.task_id = t.id "
    "WHERE t.annotators > :level AND t.n_done = :level AND NOT t.is_gold "
    "__free_for_user__ ORDER BY t.priority DESC, t.id LIMIT :limit",
    # Gold tasks (ix_tasks_gold), least ranked first, so every gold task gets answers from many people.
    "candidates_gold": "SELECT t.id, t.priority FROM tasks t JOIN leases l ON l.task_id = t.id "
    "WHERE t.is_gold = :gold __free_for_user__ ORDER BY t.n_done, t.id LIMIT :limit",
    "max_annotators": "SELECT MAX(annotators) FROM tasks",
    # PostgreSQL: lock the free lease rows looked at and skip rows others are claiming (no waiting, no deadlock).
    "candidates_pg": "__candidates__ FOR UPDATE OF l SKIP LOCKED",
    "candidates_above_pg": "__candidates_above__ FOR UPDATE OF l SKIP LOCKED",
    "candidates_gold_pg": "__candidates_gold__ FOR UPDATE OF l SKIP LOCKED",
    "my_counts": "SELECT (SELECT COUNT(*) FROM rankings WHERE annotator_id = :user), "
    "(SELECT COUNT(*) FROM skips WHERE user_id = :user), "
    "(SELECT COUNT(*) FROM (SELECT task_id FROM rankings WHERE annotator_id = :user "
    "UNION SELECT task_id FROM skips WHERE user_id = :user UNION SELECT task_id FROM flags WHERE user_id = :user) m "
    "JOIN tasks t ON t.id = m.task_id WHERE t.n_done < COALESCE(t.annotators, :n) AND NOT t.is_gold)",
    # Two counts, so each walks an index: tasks on the store's N, and the (few) with an N of their own.
    "open_tasks": "SELECT (SELECT COUNT(*) FROM tasks WHERE n_done < :n AND annotators IS NULL AND NOT is_gold) "
    "+ (SELECT COUNT(*) FROM tasks WHERE annotators IS NOT NULL AND n_done < annotators)",
    # The user's answers on gold tasks beside the known answers (the pause rule); driven by the few gold rows.
    "gold_answers_of": "SELECT r.ranks, g.ranks FROM gold_answers g JOIN rankings r ON r.task_id = g.task_id "
    "WHERE r.annotator_id = :user AND r.created_at > :since",
}
# PostgreSQL only: a submit in one round trip. Release the user's lease (its row lock is the holder check:
# a concurrent claimer of an expired lease either committed first, and then no row matches, or waits),
# raise n_done below N, insert the ranking with the order shown and time taken from the lease as it was.
# Data-modifying CTEs all run: on a complete task the lease is still released and no ranking inserted.
# Returns (ranking id or NULL, 1 if the user held the lease else 0).
PG_ONLY = {
    "submit": "WITH l AS (UPDATE leases x SET user_id = NULL, view_id = NULL, order_shown = NULL, expires_at = 0 "
    "FROM leases o WHERE x.task_id = :task AND x.user_id = :user AND o.task_id = x.task_id "
    "RETURNING o.order_shown, o.acquired_at), "
    "b AS (UPDATE tasks SET n_done = n_done + 1 WHERE id = :task AND n_done < COALESCE(annotators, :n) "
    "AND EXISTS (SELECT 1 FROM l) "
    "RETURNING id), "
    "r AS (INSERT INTO rankings (task_id, annotator_id, idempotency_key, ranks, order_shown, seconds, created_at, "
    "revisions) SELECT :task, :user, :key, :ranks, l.order_shown, GREATEST(0, :now - l.acquired_at), :now, 0 "
    "FROM b, l RETURNING id) "
    "SELECT (SELECT id FROM r), (SELECT COUNT(*) FROM l)",
}
FREE_FOR_USER = (
    "AND (l.user_id IS NULL OR l.expires_at <= :now) "
    "AND NOT EXISTS (SELECT 1 FROM rankings r WHERE r.task_id = t.id AND r.annotator_id = :user) "
    "AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.task_id = t.id AND s.user_id = :user) "
    "AND NOT EXISTS (SELECT 1 FROM flags f WHERE f.task_id = t.id AND f.user_id = :user)"
)
for _name in ("candidates", "candidates_above", "candidates_gold"):
    STATEMENTS[_name] = STATEMENTS[_name].replace("__free_for_user__", FREE_FOR_USER)
    STATEMENTS[_name + "_pg"] = STATEMENTS[_name + "_pg"].replace(f"__{_name}__", STATEMENTS[_name])
PG = {name: re.sub(r":(\w+)", r"%(\1)s", sql) for name, sql in {**STATEMENTS, **PG_ONLY}.items()}


class Raw:
    """Statements by name on the cursor of a SQLAlchemy Connection's current transaction."""

    def __init__(self, conn):
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.sql = PG if self.pg else STATEMENTS
        self.cur = conn.connection.dbapi_connection.cursor()

    def one(self, name: str, **params):
        self.cur.execute(self.sql[name], params)
        return self.cur.fetchone()

    def all(self, name: str, **params) -> list:
        self.cur.execute(self.sql[name], params)
        return self.cur.fetchall()

    def run(self, name: str, **params) -> int:
        self.cur.execute(self.sql[name], params)
        return self.cur.rowcount


def dump(value) -> str:
    """A JSON column's value as a parameter (both backends accept JSON text)."""
    return json.dumps(value, separators=(",", ":"))


def load(value):
    """A JSON column's value as read: text from SQLite, already decoded by psycopg."""
    return json.loads(value) if isinstance(value, str) else value
