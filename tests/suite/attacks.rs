//! Issue 14, "attacks that close the gap from above": Carlini–Wagner L2 and the paper's L∞
//! PGD (100 steps of 0.1·ε, 10 restarts, margin loss). Every returned point is proven
//! adversarial by the certified forward pass at the returned (certified) distance, every
//! attack radius is at least the certified radius, and CW-L2 is at least as tight as PGD-L2
//! on most examples of a trained network.

use margincert::certify::forward::CertifiedNet;
use margincert::certify::margin::Task;
use margincert::checkpoint::Checkpoint;
use margincert::data::{Dataset, embedded};
use margincert::import;
use margincert::nn::Network;
use margincert::robust::attack::{self, AttackResult, distance_up, verified_adversarial};
use margincert::robust::{self, AttackKind, AttackOptions, Norm, RobustOptions};

use crate::common::data::fixture;

/// The PyTorch-exported MLP of `fixtures/import` (784-16-10), trained on MNIST.
fn torch_mlp() -> Checkpoint {
    import::load(&fixture("import/mlp.onnx"), None, None, &Default::default())
        .unwrap()
        .checkpoint
}

fn data(n: usize) -> Dataset {
    embedded().unwrap().train.take(n)
}

/// The attack `opts` on every example of `d`, each result checked: a point is present
/// exactly when the radius is finite, the certified pass proves it misclassified, and the
/// radius is the certified distance to it.
fn attack_all(
    ck: &Checkpoint,
    d: &Dataset,
    norm: Norm,
    eps_max: f64,
    opts: &AttackOptions,
) -> Vec<f64> {
    let net = CertifiedNet::new(&ck.spec, &ck.params).unwrap();
    let task = Task::new(net.outputs(), d.classes).unwrap();
    let f32net = Network::new(&ck.spec).unwrap();
    (0..d.len())
        .map(|n| {
            let AttackResult { radius, point } = attack::attack(
                &f32net,
                &ck.params,
                &net,
                d.image(n),
                d.labels[n],
                task,
                norm,
                eps_max,
                opts,
            )
            .unwrap();
            match point {
                Some(p) => {
                    assert!(verified_adversarial(&net, &p, d.labels[n], task).unwrap());
                    assert_eq!(radius, distance_up(d.image(n), &p, norm), "example {n}");
                    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
                }
                None => assert_eq!(radius, f64::INFINITY),
            }
            radius
        })
        .collect()
}

/// CW-L2 points are verified, above the certified L2 radius, and at least as close as
/// PGD-L2's (with the paper's 100 steps and 10 restarts) on most examples; prints the median
/// CW / PGD ratio.
#[test]
fn cw_l2_is_verified_sound_and_as_tight_as_pgd() {
    let ck = torch_mlp();
    let d = data(12);
    let cw = attack_all(&ck, &d, Norm::L2, 3.0, &AttackOptions::cw(300, 10));
    let pgd = attack_all(
        &ck,
        &d,
        Norm::L2,
        3.0,
        &AttackOptions {
            bisection: 14,
            ..AttackOptions::paper()
        },
    );
    let rep = robust::run(
        &ck.spec,
        &ck.params,
        &d,
        &RobustOptions {
            norm: Norm::L2,
            eps_max: 3.0,
            steps: 14,
            attack: AttackOptions::cw(300, 10),
        },
    )
    .unwrap();
    assert_eq!(rep.violations, 0);
    let mut ratios = Vec::new();
    for (n, e) in rep.examples.iter().enumerate() {
        assert_eq!(e.attack, cw[n], "the report's attack is cw_l2's");
        assert!(e.certified <= cw[n] && e.certified <= pgd[n], "{e:?}");
        assert!(cw[n].is_finite(), "CW finds a point for example {n}");
        ratios.push(cw[n] / pgd[n]);
    }
    let close = ratios.iter().filter(|&&r| r <= 1.0 + 1e-3).count();
    println!(
        "CW-L2 / PGD-L2 radius: median {:.5}, CW within 0.1 % of PGD or below on {close} of \
         {}, min {:.4}, max {:.4}",
        robust::median(ratios.iter().copied()).unwrap(),
        ratios.len(),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max)
    );
    assert!(3 * close >= 2 * ratios.len(), "{ratios:?}");
}

/// The paper's L∞ PGD (100 steps of 0.1·ε, 10 restarts): verified points, above the certified
/// (best) L∞ radius, and never looser than the default 20-step, 3-restart PGD on most
/// examples.
#[test]
fn paper_pgd_linf_is_verified_and_tighter_than_the_default() {
    let ck = torch_mlp();
    let d = data(10);
    let paper = AttackOptions {
        bisection: 12,
        ..AttackOptions::paper()
    };
    assert_eq!(
        (paper.steps, paper.restarts, paper.kind),
        (100, 10, AttackKind::Pgd)
    );
    let strong = attack_all(&ck, &d, Norm::Inf, 0.3, &paper);
    let weak = attack_all(
        &ck,
        &d,
        Norm::Inf,
        0.3,
        &AttackOptions {
            bisection: 12,
            ..AttackOptions::default()
        },
    );
    let rep = robust::run(
        &ck.spec,
        &ck.params,
        &d,
        &RobustOptions {
            norm: Norm::Inf,
            eps_max: 0.3,
            steps: 12,
            attack: paper,
        },
    )
    .unwrap();
    assert_eq!(rep.violations, 0);
    for (n, e) in rep.examples.iter().enumerate() {
        assert_eq!(e.attack, strong[n]);
        assert!(e.certified <= strong[n], "{e:?}");
    }
    let tighter = strong.iter().zip(&weak).filter(|(s, w)| s <= w).count();
    assert!(2 * tighter >= d.len(), "{strong:?} vs {weak:?}");
}

/// CW is an L2 attack: asked for L∞ it is an error, not a panic; `none` runs no attack.
#[test]
fn cw_refuses_linf_and_none_attacks_nothing() {
    let ck = torch_mlp();
    let d = data(2);
    let opts = |norm, kind| RobustOptions {
        norm,
        eps_max: 0.3,
        steps: 4,
        attack: AttackOptions {
            kind,
            ..AttackOptions::default()
        },
    };
    let e = robust::run(&ck.spec, &ck.params, &d, &opts(Norm::Inf, AttackKind::Cw)).unwrap_err();
    assert!(e.to_string().contains("L2 attack"), "{e}");
    let rep = robust::run(&ck.spec, &ck.params, &d, &opts(Norm::L2, AttackKind::None)).unwrap();
    assert!(rep.examples.iter().all(|e| e.attack == f64::INFINITY));
    assert!("cw".parse::<AttackKind>().is_ok() && "fgsm".parse::<AttackKind>().is_err());
}
