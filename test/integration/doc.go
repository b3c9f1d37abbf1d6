// Package integration runs sorakaQ's distributed mode as separate
// processes (receive, center, worker, admin) over real Redis, ZooKeeper
// and Kafka (scripts/infra.sh up; eval "$(scripts/infra.sh env)"), and
// checks what a user sees: callbacks on time, changes applied, no message
// lost when a worker or a center is killed. Without SORAKAQ_TEST_REDIS,
// SORAKAQ_TEST_ZK and SORAKAQ_TEST_KAFKA every test is skipped.
package integration
