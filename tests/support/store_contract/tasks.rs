//! The store contract, the outbox's side: registration, completion, retry
//! state and dead letters.

use super::*;

pub async fn registration_keeps_a_queued_id_in_place_and_never_repeats_a_revision<
    S: StoreUnderTest,
>(
    s: &S,
) {
    let first = register(s, vec![request_task("a"), request_task("b")]).await;
    let mut again = with_version(request_task("a"), 2);
    again.created_at = T0 + 1_000.0;
    let replaced = register(s, vec![again]).await;
    assert_eq!(replaced[0].seq, first[0].seq, "a queued id keeps its place");
    assert_eq!(replaced[0].created_at, T0, "and its creation time");
    assert!(replaced[0].revision > first[1].revision);
    assert_eq!(
        version_of(&queued(s).await[0]),
        2,
        "the new payload is stored"
    );

    assert!(s
        .tasks()
        .complete_task("a", replaced[0].revision)
        .await
        .unwrap());
    let reborn = register(s, vec![request_task("a")]).await;
    let seen = [first[0].revision, first[1].revision, replaced[0].revision];
    assert!(
        !seen.contains(&reborn[0].revision),
        "a revision never repeats, not even after the id was completed"
    );
    assert!(
        reborn[0].seq > first[1].seq,
        "a completed id queues at the end"
    );
}

pub async fn registering_a_batch_numbers_it_in_order_in_one_go<S: StoreUnderTest>(s: &S) {
    let stored = register(
        s,
        vec![request_task("a"), request_task("b"), request_task("c")],
    )
    .await;
    let ids: Vec<&str> = stored.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"], "answered in input order");
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(stored.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(queued(s).await, stored, "stored as answered");
}

pub async fn complete_task_removes_only_the_exact_revision<S: StoreUnderTest>(s: &S) {
    let first = register(s, vec![request_task("a")]).await;
    let second = register(s, vec![with_version(request_task("a"), 2)]).await;
    assert!(
        !s.tasks()
            .complete_task("a", first[0].revision)
            .await
            .unwrap(),
        "an answer to the old payload leaves the new one queued"
    );
    assert_eq!(queued(s).await, second);
    assert!(!s.tasks().complete_task("missing", 1).await.unwrap());
    assert!(s
        .tasks()
        .complete_task("a", second[0].revision)
        .await
        .unwrap());
    assert!(queued(s).await.is_empty());
}

pub async fn complete_tasks_removes_only_the_exact_revisions<S: StoreUnderTest>(s: &S) {
    let first = register(
        s,
        vec![request_task("a"), request_task("b"), request_task("c")],
    )
    .await;
    let b2 = register(s, vec![with_version(request_task("b"), 2)]).await;
    let done: Vec<(String, u64)> = first.iter().map(|t| (t.id.clone(), t.revision)).collect();
    s.tasks()
        .complete_tasks(&done)
        .await
        .expect("complete_tasks");
    assert_eq!(queued(s).await, b2, "only b's newer payload stays");
    s.tasks().complete_tasks(&[]).await.expect("an empty group");
}

pub async fn update_task_refuses_a_task_registered_again_since<S: StoreUnderTest>(s: &S) {
    let first = register(s, vec![request_task("a")]).await;
    let mut retried = first[0].clone();
    retried.attempts = 1;
    retried.next_attempt_at = Some(T0 + 2_000.0);
    assert!(s.tasks().update_task(&retried).await.unwrap());
    assert_eq!(queued(s).await, vec![retried.clone()]);

    let second = register(s, vec![with_version(request_task("a"), 2)]).await;
    retried.attempts = 2;
    assert!(
        !s.tasks().update_task(&retried).await.unwrap(),
        "the retry state of the old payload does not overwrite the new one"
    );
    assert_eq!(queued(s).await, second);
}

// ----- dead letters -----

pub async fn a_dead_letter_leaves_the_queue_only_at_the_revision_sent<S: StoreUnderTest>(s: &S) {
    let first = register(s, vec![request_task("a"), request_task("b")]).await;
    let a2 = register(s, vec![with_version(request_task("a"), 2)]).await;
    assert!(
        !s.tasks().dead_letter(&failed(&first[0])).await.unwrap(),
        "the old payload's failure does not take the new one"
    );
    assert_eq!(s.tasks().count_failed().await.unwrap(), 0);
    assert!(s.tasks().dead_letter(&failed(&first[1])).await.unwrap());
    assert_eq!(queued(s).await, a2);
    assert_eq!(s.tasks().count_failed().await.unwrap(), 1);
    assert_eq!(
        s.tasks().list_failed().await.unwrap(),
        vec![failed(&first[1])]
    );
}

pub async fn a_requeued_dead_letter_goes_to_the_end_of_the_queue_with_a_fresh_budget<
    S: StoreUnderTest,
>(
    s: &S,
) {
    let stored = register(s, vec![request_task("a"), request_task("b")]).await;
    let mut spent = stored[0].clone();
    spent.attempts = 5;
    spent.next_attempt_at = Some(T0 + 60_000.0);
    spent.dispatched = true;
    spent.errors = vec![TaskError {
        class: ErrorClass::Retryable,
        message: "HTTP 503".into(),
        status: Some(503),
        at: T0 + 1.0,
    }];
    assert!(s.tasks().update_task(&spent).await.unwrap());
    assert!(s.tasks().dead_letter(&failed(&spent)).await.unwrap());

    let requeued = s
        .tasks()
        .requeue_failed("a", T0 + 10.0)
        .await
        .unwrap()
        .expect("requeued");
    assert_eq!(requeued.attempts, 0);
    assert!(requeued.errors.is_empty());
    assert_eq!(requeued.next_attempt_at, None);
    assert!(!requeued.dispatched);
    assert!(requeued.seq > stored[1].seq, "at the end of the queue");
    assert!(requeued.revision > stored[1].revision, "a fresh revision");
    assert_eq!(version_of(&requeued), 1, "the same payload");
    assert_eq!(s.tasks().count_failed().await.unwrap(), 0);
    assert_eq!(queued(s).await, vec![stored[1].clone(), requeued]);
    assert_eq!(s.tasks().requeue_failed("a", T0).await.unwrap(), None);
}

pub async fn requeueing_a_dead_letter_whose_id_was_registered_again_keeps_the_newer_payload<
    S: StoreUnderTest,
>(
    s: &S,
) {
    let first = register(s, vec![request_task("a")]).await;
    assert!(s.tasks().dead_letter(&failed(&first[0])).await.unwrap());
    let newer = register(s, vec![with_version(request_task("a"), 2)]).await;

    let answered = s.tasks().requeue_failed("a", T0 + 10.0).await.unwrap();
    let queued = queued(s).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        version_of(&queued[0]),
        2,
        "the app's newer payload is not overwritten by the old dead letter"
    );
    assert_eq!(queued[0], newer[0]);
    assert_eq!(answered, Some(newer[0].clone()), "answered as stored");
    assert_eq!(s.tasks().count_failed().await.unwrap(), 0);
}

pub async fn discarding_a_dead_letter_says_whether_it_existed<S: StoreUnderTest>(s: &S) {
    let stored = register(s, vec![request_task("a")]).await;
    assert!(s.tasks().dead_letter(&failed(&stored[0])).await.unwrap());
    assert!(s.tasks().discard_failed("a").await.unwrap());
    assert!(!s.tasks().discard_failed("a").await.unwrap());
    assert_eq!(s.tasks().count_failed().await.unwrap(), 0);
    assert!(s.tasks().list_failed().await.unwrap().is_empty());
    assert!(queued(s).await.is_empty(), "gone for good");
}

/// Answers kept for dependent tasks: read back as stored, gone once deleted.
pub async fn kept_answers_read_back_until_deleted<S: StoreUnderTest>(s: &S) {
    let answer =
        json!({"status": 201, "headers": {"location": "/n/42"}, "body": {"id": 42, "tags": ["a"]}});
    assert_eq!(s.tasks().get_answer("create").await.unwrap(), None);
    s.tasks().put_answer("create", &answer).await.unwrap();
    assert_eq!(s.tasks().get_answer("create").await.unwrap(), Some(answer));
    s.tasks().delete_answer("create").await.unwrap();
    assert_eq!(s.tasks().get_answer("create").await.unwrap(), None);
    s.tasks().delete_answer("never-kept").await.unwrap();
}

/// Tasks written back after the database was lost come back exactly, and
/// a registration after them takes a later place and revision.
pub async fn restored_tasks_come_back_exactly_and_the_counter_moves_past_them<S: StoreUnderTest>(
    s: &S,
) {
    let mut first = request_task("a");
    first.seq = 7;
    first.revision = 9;
    first.attempts = 2;
    let mut second = request_task("b");
    second.seq = 8;
    second.revision = 8;
    second.ordering_key = Some("k".into());
    s.tasks()
        .restore_tasks(&[first.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(queued(s).await, vec![first, second]);
    let later = register(s, vec![request_task("c")]).await;
    assert!(later[0].seq > 9 && later[0].revision > 9, "{later:?}");
}
