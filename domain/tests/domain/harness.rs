//! given(events).when(command).then(events) / then_err(error).

use domain::{Aggregate, DomainError};

/// The state built from past events.
pub struct Given<A: Aggregate> {
    state: A,
}

/// The outcome of a command.
pub struct When<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, DomainError>,
}

/// Starts a test from a history.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given {
        state: A::replay(&events),
    }
}

impl<A: Aggregate> Given<A> {
    /// Decides a command against the history.
    pub fn when(self, command: A::Command) -> When<A> {
        let result = self.state.decide(command);
        When {
            state: self.state,
            result,
        }
    }
}

impl<A: Aggregate> When<A> {
    /// Asserts the emitted events and returns the state after them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "unexpected events");
                events.iter().fold(self.state, |s, e| s.evolve(e))
            }
            Err(e) => panic!("expected events {expected:?}, got error {e:?}"),
        }
    }

    /// Asserts the command was refused with exactly this error.
    #[track_caller]
    pub fn then_err(self, expected: DomainError) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }

    /// Asserts the command was refused with an error matching `check`.
    #[track_caller]
    pub fn then_err_matches(self, check: impl FnOnce(&DomainError) -> bool) {
        match self.result {
            Ok(events) => panic!("expected an error, got events {events:?}"),
            Err(e) => assert!(check(&e), "unexpected error {e:?}"),
        }
    }
}
