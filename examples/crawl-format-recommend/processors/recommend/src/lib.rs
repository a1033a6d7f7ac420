//! The `recommend` processor of the crawl -> format -> recommend example:
//! inputs `formatted` (articles with keywords) and `users` (interest
//! profiles, copied to every partition), output `recommendations`.
//!
//! A `users` record stores the user's profile (replacing an earlier one) and
//! outputs nothing. A `formatted` record is scored against every profile
//! (see [`profiles`]); the best users at or above the threshold, at most
//! `max_per_article`, get a recommendation keyed by user id:
//! `{"user", "article", "link", "title", "score", "reasons"}`. A user is never
//! recommended the same article twice (see [`recommender`] for the state).
//!
//! Parameters: `threshold` (default 2.0), `max_per_article` (default 5),
//! `users_topic` (default `users`). A record that cannot be read fails (and
//! goes to `recommendations.dlq`) with a warning in the processor's log.
//!
//! The profiles live in the instance's memory with an inverted index, loaded
//! from state on the instance's first record: scoring an article touches only
//! the users interested in one of its keywords.

pub mod profiles;
pub mod recommender;

use std::cell::RefCell;
use std::sync::OnceLock;

use eddy_processor::{state, Error, Output, Params, Record};

use recommender::{Config, Recommender, Store};

static CONFIG: OnceLock<Config> = OnceLock::new();

thread_local! {
    /// This instance's profiles; `None` until its first record.
    static RECOMMENDER: RefCell<Option<Recommender>> = const { RefCell::new(None) };
}

/// The processor's state (this processor and input partition number).
struct HostState;

impl Store for HostState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        state::get(key)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        state::put(key, value)
    }
}

fn setup(params: &Params) -> Result<(), Error> {
    let config = Config::from_params(params).map_err(Error::msg)?;
    // A re-run of init in the same instance keeps the first configuration,
    // which is the same.
    let _ = CONFIG.set(config);
    Ok(())
}

#[eddy_processor::flat_map(init = setup)]
fn recommend(record: &Record) -> Result<Vec<Output>, Error> {
    let config = CONFIG.get_or_init(Config::default);
    let result = RECOMMENDER.with_borrow_mut(|slot| {
        let mut store = HostState;
        let recommender = match slot {
            Some(r) => r,
            None => {
                let r = Recommender::load(&store)?;
                eddy_processor::debug!("loaded {} profiles from state", r.profiles().len());
                slot.insert(r)
            }
        };
        if record.topic == config.users_topic {
            recommender.on_profile(&mut store, record.value).map(|()| Vec::new())
        } else {
            let recommendations = recommender.on_article(&mut store, config, record.value)?;
            Ok(recommendations.into_iter().map(|r| Output::new(r.json).key(r.user)).collect())
        }
    });
    result.map_err(|reason| {
        eddy_processor::warn!("{}/{}@{}: {reason}", record.topic, record.partition, record.offset);
        Error::msg(reason)
    })
}
