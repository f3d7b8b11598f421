//! Leader election cases: [`Candidate`] and [`Follower`] on the store under test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::support::{eventually, Case, EVENT_TIMEOUT};
use super::TestTarget;
use crate::leadership::{Candidate, Follower, LeaderStream, Leadership, LeadershipStream};
use crate::store::Store;

/// The term length candidates use: short, yet what the backend honours.
fn term(case: &Case<'_>) -> Duration {
    case.ttl().max(Duration::from_secs(2))
}

/// How long an election may take: a term running out, the backend's expiry slack, and the
/// time a watch may take to tell.
fn election_within(case: &Case<'_>) -> Duration {
    term(case) + case.target.expiry_slack() + EVENT_TIMEOUT
}

/// Whether the backend can run elections at all.
fn elects(case: &Case<'_>) -> bool {
    let caps = case.store.capabilities();
    caps.lock && caps.watch
}

/// The next term change of a campaign, within `within`.
async fn next_term(terms: &mut LeadershipStream, within: Duration, what: &str) -> Leadership {
    match tokio::time::timeout(within, terms.next()).await {
        Ok(Some(Ok(term))) => term,
        Ok(Some(Err(err))) => panic!("{what}: the campaign reported {err}"),
        Ok(None) => panic!("{what}: the campaign ended"),
        Err(_) => panic!("{what}: nothing within {within:?}"),
    }
}

/// The next leader a follower names, within `within`.
async fn next_leader(leaders: &mut LeaderStream, within: Duration) -> String {
    match tokio::time::timeout(within, leaders.next()).await {
        Ok(Some(Ok(name))) => name,
        Ok(Some(Err(err))) => panic!("the follower reported {err}"),
        Ok(None) => panic!("the follower ended"),
        Err(_) => panic!("no leader named within {within:?}"),
    }
}

/// Three candidates on two handles, each leader resigning soon after it is elected: at
/// every moment at most one candidate believes it leads, the first is elected within a term
/// plus slack, and fencing tokens grow from term to term.
pub async fn leadership_one_leader_at_a_time(target: &dyn TestTarget) {
    let case = Case::start(target, "leadership_one_leader_at_a_time").await;
    if !elects(&case) {
        return case.finish().await;
    }
    let key = case.key("leader");
    let handles = [Arc::clone(&case.store), case.target.open().await];
    let candidates: Vec<Arc<Candidate>> = (0..3)
        .map(|i| {
            let store = Arc::clone(&handles[i % 2]);
            Arc::new(Candidate::new(store, key.clone(), format!("node-{i}"), term(&case)))
        })
        .collect();

    // The checker: at every sample, at most one candidate holds a term, and a new term's
    // token is larger than the last one seen.
    let done = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let checker = {
        let (candidates, done, tokens) = (candidates.clone(), Arc::clone(&done), Arc::clone(&tokens));
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                let held: Vec<u64> = candidates.iter().filter_map(|c| c.fencing_token()).collect();
                assert!(held.len() <= 1, "two candidates believe they lead: {held:?}");
                if let Some(&token) = held.first() {
                    let mut seen = tokens.lock().unwrap_or_else(PoisonError::into_inner);
                    if seen.last() != Some(&token) {
                        seen.push(token);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let started = Instant::now();
    let mut streams: Vec<LeadershipStream> = candidates.iter().map(|c| c.campaign()).collect();
    let mut elections = 0;
    let mut first_election = None;
    while elections < 6 {
        let (change, index, _) = futures_util::future::select_all(
            streams
                .iter_mut()
                .map(|s| Box::pin(next_term(s, election_within(&case), "a term change"))),
        )
        .await;
        if let Leadership::Elected { fencing_token } = change {
            elections += 1;
            first_election.get_or_insert_with(|| started.elapsed());
            assert_eq!(candidates[index].fencing_token(), Some(fencing_token));
            // Hand over after a short term, from aside: the stream keeps being read.
            let leader = Arc::clone(&candidates[index]);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                leader.resign().await;
            });
        }
    }
    let first = first_election.unwrap_or_default();
    assert!(first <= election_within(&case), "first election after {first:?}");
    for candidate in &candidates {
        candidate.stop().await;
    }
    done.store(true, Ordering::Release);
    checker.await.unwrap_or_else(|e| panic!("the checker failed: {e}"));
    let tokens = tokens.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert!(tokens.len() >= 2, "several terms were seen: {tokens:?}");
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens grow from term to term: {tokens:?}"
    );
    case.finish().await;
}

/// A follower started before any leader names the first one; when the leader's handle
/// closes (its renewals stop), another candidate is elected within a term plus slack and
/// the follower names it.
pub async fn leadership_failover(target: &dyn TestTarget) {
    let case = Case::start(target, "leadership_failover").await;
    if !elects(&case) {
        return case.finish().await;
    }
    let key = case.key("leader");
    let mut leaders = Follower::new(Arc::clone(&case.store), key.clone()).follow();
    let doomed: Arc<dyn Store> = case.target.open().await;
    let first = Candidate::new(Arc::clone(&doomed), key.clone(), "first", term(&case));
    let mut first_terms = first.campaign();
    assert_eq!(
        next_term(&mut first_terms, EVENT_TIMEOUT, "start").await,
        Leadership::NotElected
    );
    assert!(matches!(
        next_term(&mut first_terms, election_within(&case), "first election").await,
        Leadership::Elected { .. }
    ));
    assert_eq!(next_leader(&mut leaders, EVENT_TIMEOUT).await, "first");

    let others = [
        Candidate::new(Arc::clone(&case.store), key.clone(), "second", term(&case)),
        Candidate::new(Arc::clone(&case.store), key.clone(), "third", term(&case)),
    ];
    let mut other_terms: Vec<LeadershipStream> = others.iter().map(Candidate::campaign).collect();
    for terms in &mut other_terms {
        assert_eq!(
            next_term(terms, EVENT_TIMEOUT, "others start").await,
            Leadership::NotElected
        );
    }

    let closed_at = Instant::now();
    doomed
        .close()
        .await
        .unwrap_or_else(|e| panic!("close the leader's handle: {e}"));
    let (won, _, _) = futures_util::future::select_all(
        other_terms
            .iter_mut()
            .map(|s| Box::pin(next_term(s, election_within(&case), "failover"))),
    )
    .await;
    let failover = closed_at.elapsed();
    assert!(matches!(won, Leadership::Elected { .. }), "{won:?}");
    assert!(
        failover <= election_within(&case),
        "failover took {failover:?} with a term of {:?}",
        term(&case)
    );
    eprintln!(
        "leadership_failover on {}: a new leader {failover:?} after the old one's handle closed (term {:?})",
        case.store.name(),
        term(&case)
    );
    let successor = next_leader(&mut leaders, EVENT_TIMEOUT).await;
    assert!(["second", "third"].contains(&successor.as_str()), "{successor}");
    for candidate in others.iter().chain([&first]) {
        candidate.stop().await;
    }
    case.finish().await;
}

/// Resigning hands leadership to the other candidate and the follower names each leader
/// once, in order; stopping ends the campaign streams and leaves no background work.
pub async fn leadership_resign_and_stop(target: &dyn TestTarget) {
    let case = Case::start(target, "leadership_resign_and_stop").await;
    if !elects(&case) {
        return case.finish().await;
    }
    let key = case.key("leader");
    let baseline = case.store.background_tasks();
    let mut leaders = Follower::new(Arc::clone(&case.store), key.clone()).follow();
    let alpha = Candidate::new(Arc::clone(&case.store), key.clone(), "alpha", term(&case));
    let beta = Candidate::new(Arc::clone(&case.store), key.clone(), "beta", term(&case));
    let mut alpha_terms = alpha.campaign();
    assert_eq!(
        next_term(&mut alpha_terms, EVENT_TIMEOUT, "alpha starts").await,
        Leadership::NotElected
    );
    let Leadership::Elected { fencing_token: first } =
        next_term(&mut alpha_terms, election_within(&case), "alpha elected").await
    else {
        panic!("alpha was not elected")
    };
    let mut beta_terms = beta.campaign();
    assert_eq!(
        next_term(&mut beta_terms, EVENT_TIMEOUT, "beta starts").await,
        Leadership::NotElected
    );
    assert_eq!(next_leader(&mut leaders, EVENT_TIMEOUT).await, "alpha");

    alpha.resign().await;
    assert_eq!(alpha.fencing_token(), None, "a resigned candidate does not lead");
    assert_eq!(
        next_term(&mut alpha_terms, EVENT_TIMEOUT, "alpha resigns").await,
        Leadership::NotElected
    );
    let Leadership::Elected { fencing_token: second } =
        next_term(&mut beta_terms, election_within(&case), "beta takes over").await
    else {
        panic!("beta was not elected")
    };
    assert!(second > first, "tokens grow: {first} then {second}");
    assert_eq!(next_leader(&mut leaders, EVENT_TIMEOUT).await, "beta");
    // Resigning while not leading changes nothing.
    alpha.resign().await;

    beta.stop().await;
    alpha.stop().await;
    for (name, terms) in [("alpha", &mut alpha_terms), ("beta", &mut beta_terms)] {
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, terms.next()).await {
                Ok(None) => break,
                Ok(Some(_)) => {}
                Err(_) => panic!("{name}'s campaign did not end after stop"),
            }
        }
    }
    drop(leaders);
    eventually(
        election_within(&case),
        "background work back to the baseline after stop",
        || async { case.store.background_tasks() <= baseline },
    )
    .await;
    case.finish().await;
}

/// A leader that dies without a word (its runtime is dropped: no release, no renewal) is
/// replaced once its term runs out — its lock TTL, or its session timeout on stores whose
/// locks live as long as the session — and the follower names the successor.
pub async fn leadership_failover_after_crash(target: &dyn TestTarget) {
    let case = Case::start(target, "leadership_failover_after_crash").await;
    if !elects(&case) {
        return case.finish().await;
    }
    let key = case.key("leader");
    let mut leaders = Follower::new(Arc::clone(&case.store), key.clone()).follow();
    // The doomed leader runs on a runtime of its own, on a thread of its own, so that
    // dropping the runtime kills it mid-term the way a crash would.
    let crashed_at = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("a runtime for the doomed leader: {e}"));
                runtime.block_on(async {
                    let store = case.target.open().await;
                    let doomed = Candidate::new(store, key.clone(), "doomed", term(&case));
                    let mut terms = doomed.campaign();
                    assert_eq!(
                        next_term(&mut terms, EVENT_TIMEOUT, "start").await,
                        Leadership::NotElected
                    );
                    let elected = next_term(&mut terms, election_within(&case), "doomed elected").await;
                    assert!(matches!(elected, Leadership::Elected { .. }), "{elected:?}");
                    // Not stopped, not dropped: the runtime goes with everything in it.
                    std::mem::forget(terms);
                    std::mem::forget(doomed);
                });
                drop(runtime);
                Instant::now()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    });
    assert_eq!(next_leader(&mut leaders, EVENT_TIMEOUT).await, "doomed");

    let successor = Candidate::new(Arc::clone(&case.store), key.clone(), "successor", term(&case));
    let mut terms = successor.campaign();
    assert_eq!(
        next_term(&mut terms, EVENT_TIMEOUT, "successor starts").await,
        Leadership::NotElected
    );
    let within = term(&case) + case.target.expiry_slack() + Duration::from_secs(20);
    let won = next_term(&mut terms, within, "successor elected").await;
    let failover = crashed_at.elapsed();
    assert!(matches!(won, Leadership::Elected { .. }), "{won:?}");
    eprintln!(
        "leadership_failover_after_crash on {}: a new leader {failover:?} after the old one died (term {:?})",
        case.store.name(),
        term(&case)
    );
    assert_eq!(next_leader(&mut leaders, EVENT_TIMEOUT).await, "successor");
    successor.stop().await;
    case.finish().await;
}
