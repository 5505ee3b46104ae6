//! A since API (header key): GET /v1/tx?since=<unix s>&limit=N, `ts > since`.

use std::time::UNIX_EPOCH;

use super::*;

const API_KEY: &str = "kyc-9f8e7d6c";

#[derive(Default)]
struct Ledger {
    /// (seq, ts in ms); served sorted by (ts, seq).
    items: Vec<(u64, i64)>,
}

impl Ledger {
    fn push(&mut self, ts_ms: i64) {
        let seq = self.items.len() as u64;
        self.items.push((seq, ts_ms));
    }
    fn max_ts(&self) -> i64 {
        self.items.iter().map(|(_, t)| *t).max().unwrap_or(0)
    }
    fn sorted(&self) -> Vec<(u64, i64)> {
        let mut v = self.items.clone();
        v.sort_by_key(|(seq, ts)| (*ts, *seq));
        v
    }
}

fn since_api(state: Arc<Mutex<Ledger>>, unit: TimeUnit) -> Handler {
    Arc::new(move |req: &Req| {
        let st = state.lock().expect("lock");
        if req.h("x-api-key").as_deref() != Some(API_KEY) {
            return Resp::new(401, "{\"error\":\"missing key\"}");
        }
        let since_ms = match (req.q("since"), req.q("updated_after")) {
            (Some(s), _) => s.parse::<i64>().expect("unix seconds") * 1000,
            (_, Some(t)) => parse_rfc3339_ms(&t).expect("rfc3339 since"),
            _ => return Resp::new(400, "{\"error\":\"since required\"}"),
        };
        let limit: usize = req.q("limit").map_or(40, |l| l.parse().expect("limit"));
        let page: Vec<String> = st
            .sorted()
            .into_iter()
            .filter(|(_, ts)| *ts > since_ms)
            .take(limit)
            .map(|(seq, ts)| {
                let t = match unit {
                    TimeUnit::Seconds => (ts / 1000).to_string(),
                    TimeUnit::Milliseconds => ts.to_string(),
                    TimeUnit::Rfc3339 => format!(
                        "\"{}\"",
                        humantime::format_rfc3339_millis(
                            UNIX_EPOCH + Duration::from_millis(ts as u64)
                        )
                    ),
                };
                format!("{{\"id\":\"tx_{seq}\",\"ts\":{t}}}")
            })
            .collect();
        Resp::new(
            200,
            format!("{{\"result\":{{\"transactions\":[{}]}}}}", page.join(",")),
        )
    })
}

fn since_options(base: &str, lookback: i64, limit: usize, unit: &str) -> Value {
    json!({
        "url": format!("{base}/v1/tx?since={{since}}&limit={limit}"),
        "auth": { "kind": "header", "name": "X-Api-Key" },
        "items_pointer": "/result/transactions",
        "id_pointer": "/id",
        "time_pointer": "/ts",
        "time_unit": unit,
        "cursor": { "kind": "since", "lookback_seconds": lookback },
    })
}

/// 1,000+ items, 1–5 sharing each second (so page boundaries split equal timestamps),
/// inserts at the newest second (and the next) between pages.
#[tokio::test]
async fn a_since_api_yields_every_item_with_equal_timestamps_at_boundaries_and_inserts() {
    for lookback in [1, 2, 300] {
        let state = Arc::new(Mutex::new(Ledger::default()));
        {
            let mut st = state.lock().expect("lock");
            let mut second = 1_700_000_000_i64;
            let mut n = 0_u64;
            while st.items.len() < 1_000 {
                n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                for _ in 0..1 + (n >> 33) % 5 {
                    st.push(second * 1000);
                }
                second += 1;
            }
        }
        let base = serve(since_api(state.clone(), TimeUnit::Seconds)).await;
        let kind = kind(since_options(&base, lookback, 40, "seconds"));
        let creds = secrets(API_KEY);

        let run = drain(&kind, &creds, None, |page| {
            if page > 40 {
                return;
            }
            let mut st = state.lock().expect("lock");
            let newest = st.max_ts();
            for _ in 0..4 {
                st.push(newest);
            }
            if page % 3 == 0 {
                st.push(newest + 1000);
            }
        })
        .await
        .expect("drained");

        let want: Vec<String> = state
            .lock()
            .expect("lock")
            .sorted()
            .iter()
            .map(|(seq, _)| format!("tx_{seq}"))
            .collect();
        assert!(want.len() > 1_100, "inserts happened");
        let got = ids(&run.items);
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            want.len(),
            "every item at least once (lookback {lookback})"
        );
        assert_eq!(
            first_occurrences(&got),
            want,
            "the full set in order (lookback {lookback})"
        );
        let cursor = run.cursor.expect("cursor");
        assert_eq!(
            cursor["newest_ms"],
            json!(state.lock().expect("lock").max_ts())
        );

        // Caught up: the next run brings nothing new; a late item inside the lookback
        // window comes with the next run.
        let again = drain(&kind, &creds, Some(cursor.clone()), |_| {})
            .await
            .expect("drained");
        let known: HashSet<String> = want.iter().cloned().collect();
        assert!(ids(&again.items).iter().all(|i| known.contains(i)));
        if lookback == 300 {
            let late = state.lock().expect("lock").max_ts() - 120_000;
            state.lock().expect("lock").push(late);
            let late_id = format!("tx_{}", want.len());
            let run = drain(&kind, &creds, again.cursor, |_| {})
                .await
                .expect("drained");
            assert!(
                ids(&run.items).contains(&late_id),
                "late item inside the window"
            );
        }
    }
}

#[tokio::test]
async fn items_sharing_the_boundary_second_with_an_exclusive_since_are_not_lost() {
    let state = Arc::new(Mutex::new(Ledger::default()));
    {
        let mut st = state.lock().expect("lock");
        for s in [100, 100, 101, 101, 101, 102] {
            st.push(1_700_000_000_000 + s * 1000);
        }
    }
    let base = serve(since_api(state.clone(), TimeUnit::Rfc3339)).await;
    let kind = kind(json!({
        "url": format!("{base}/v1/tx?updated_after={{since_rfc3339}}&limit=4"),
        "auth": { "kind": "header", "name": "X-Api-Key" },
        "items_pointer": "/result/transactions",
        "id_pointer": "/id",
        "time_pointer": "/ts",
        "time_unit": "rfc3339",
        "cursor": { "kind": "since", "lookback_seconds": 1 },
    }));
    let run = drain(&kind, &secrets(API_KEY), None, |_| {})
        .await
        .expect("drained");
    let got = ids(&run.items);
    // Page 1 ends inside second 101 (tx_2, tx_3); tx_4 shares it and still comes.
    assert_eq!(
        first_occurrences(&got),
        vec!["tx_0", "tx_1", "tx_2", "tx_3", "tx_4", "tx_5"]
    );
}

#[tokio::test]
async fn more_than_a_page_inside_one_second_stops_the_run_instead_of_skipping_items() {
    let state = Arc::new(Mutex::new(Ledger::default()));
    {
        let mut st = state.lock().expect("lock");
        for ms in [1_000_000, 1_000_500, 1_001_200] {
            st.push(ms);
        }
    }
    let base = serve(since_api(state.clone(), TimeUnit::Milliseconds)).await;
    let kind = kind(since_options(&base, 300, 3, "milliseconds"));
    let creds = secrets(API_KEY);
    let err = drain(&kind, &creds, None, |_| {
        // Late items inside the newest second: the window no longer fits in a page.
        let mut st = state.lock().expect("lock");
        if st.items.len() == 3 {
            st.push(1_000_600);
            st.push(1_000_700);
        }
    })
    .await
    .expect_err("fatal");
    assert!(
        matches!(&err, FetchError::Fatal(m) if m.contains("more than one page")),
        "{err:?}"
    );
}
