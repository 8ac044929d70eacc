//! MMSA's MFN (`MMSA/models/singleTask/MFN.py`, MMSA 2.2.1; Zadeh et al., "Memory Fusion
//! Network for Multi-view Sequential Learning", 2018): an LSTM cell per modality over the
//! aligned, padded sequences (every padded step run, as MMSA's loop runs them; audio and video
//! arrive as MMSA feeds them, their means repeated at every step: see [`super`]); at each step
//! an attention over the cell states before and after the step (`windowsize` 2), a proposal
//! ĉ from the attended states, and a memory kept by one gate and written by another
//! (`u ← γ₁ ⊙ u + γ₂ ⊙ ĉ`); the three cells' last hidden states and the last memory go
//! through the output layers.
//!
//! The cells do not read the memory, so they run first over every step (the fused LSTM,
//! returning each step's cell state); the attention and the proposal then take every step at
//! once, and only the memory runs step by step ([`FusedMemory`] on the CPU).

use candle_core::Tensor;
use mmflow_pipeline::StageError;
use rand::Rng;

use super::super::device::err;
use super::super::fused_memory::FusedMemory;
use super::super::nn::{dropout, softmax_last_dim, Linear, LstmCell, Pass};
use super::super::weights::ParamStore;
use super::settings::{MfnLayer, MfnSettings, Resolved};

type Result<T> = std::result::Result<T, StageError>;

/// A two-layer network of MFN's: `fc2(drop(relu(fc1(x))))`.
struct TwoLayers {
    fc1: Linear,
    fc2: Linear,
    drop: f32,
}

impl TwoLayers {
    /// `model.<name>_fc1` (`input` → `hidden`) and `model.<name>_fc2` (→ `output`).
    fn new(
        store: &mut ParamStore,
        name: &str,
        (input, hidden, output): (usize, usize, usize),
        drop: f32,
    ) -> Result<TwoLayers> {
        Ok(TwoLayers {
            fc1: Linear::new(store, &format!("model.{name}_fc1"), input, hidden)?,
            fc2: Linear::new(store, &format!("model.{name}_fc2"), hidden, output)?,
            drop,
        })
    }

    fn forward(&self, x: &Tensor, pass: &mut Pass<'_>) -> Result<Tensor> {
        let hidden = dropout(&self.fc1.forward_relu(x)?, self.drop, pass)?;
        self.fc2.forward(&hidden)
    }
}

/// MFN's layers under MMSA's names.
pub struct Mfn {
    /// `lstm_l`, `lstm_a`, `lstm_v`.
    cells: [LstmCell; 3],
    /// `att1`: attention weights over the window of cell states.
    attention: TwoLayers,
    /// `att2`: the memory's proposal.
    proposal: TwoLayers,
    /// `gamma1`, `gamma2`: their first layers read the attended states and the memory.
    gates: [TwoLayers; 2],
    /// `out`.
    out: TwoLayers,
    /// The memory's width.
    memory: usize,
}

impl Mfn {
    /// MFN over modalities of widths `[text, audio, video]` with `heads` outputs, parameters
    /// drawn in MMSA's order.
    pub fn new(
        store: &mut ParamStore,
        settings: &Resolved,
        widths: [usize; 3],
        heads: usize,
    ) -> Result<Mfn> {
        let MfnSettings {
            memory,
            attention,
            proposal,
            gates,
            out,
        } = settings.mfn;
        let hidden = settings.hidden_dims;
        let cells = [("l", 0), ("a", 1), ("v", 2)].map(|(letter, m)| {
            LstmCell::pytorch(store, &format!("model.lstm_{letter}"), widths[m], hidden[m])
        });
        let [l, a, v] = cells;
        let cells = [l?, a?, v?];
        let total: usize = hidden.iter().sum();
        // The window: the cell states before and after a step.
        let window = 2 * total;
        let attention = TwoLayers::new(
            store,
            "att1",
            (window, attention.shapes, window),
            attention.drop,
        )?;
        let proposal = TwoLayers::new(
            store,
            "att2",
            (window, proposal.shapes, memory),
            proposal.drop,
        )?;
        let gate = |store: &mut ParamStore, name: &str, layer: MfnLayer| {
            TwoLayers::new(
                store,
                name,
                (window + memory, layer.shapes, memory),
                layer.drop,
            )
        };
        let gates = [
            gate(store, "gamma1", gates[0])?,
            gate(store, "gamma2", gates[1])?,
        ];
        let out = TwoLayers::new(store, "out", (total + memory, out.shapes, heads), out.drop)?;
        Ok(Mfn {
            cells,
            attention,
            proposal,
            gates,
            out,
            memory,
        })
    }

    /// B × heads from aligned text, audio and video (each B × T × D, padded to the same T).
    pub fn forward(
        &self,
        text: &Tensor,
        audio: &Tensor,
        video: &Tensor,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        // Padded lengths are at least 1 (checked with the architecture); a sequence of no
        // steps has no last state.
        if text.dim(1).map_err(err("mfn"))? == 0 {
            return Err(StageError::Internal(
                "MFN over sequences of no steps".into(),
            ));
        }
        let mut last = Vec::with_capacity(4);
        let mut cell_states = Vec::with_capacity(3);
        for (cell, x) in self.cells.iter().zip([text, audio, video]) {
            let (h, c) = cell.states(x, pass.train)?;
            let steps = h.dim(1).map_err(err("mfn"))?;
            last.push(
                h.narrow(1, steps - 1, 1)
                    .and_then(|h| h.squeeze(1))
                    .map_err(err("mfn"))?,
            );
            cell_states.push(c);
        }
        let window = window_of(&cell_states).map_err(err("mfn window"))?;
        let weights = softmax_last_dim(&self.attention.forward(&window, pass)?)
            .map_err(err("mfn attention"))?;
        let attended = weights.mul(&window).map_err(err("mfn attention"))?;
        let proposal = self
            .proposal
            .forward(&attended, pass)?
            .tanh()
            .map_err(err("mfn"))?;
        last.push(self.memory(&attended, &proposal, pass)?);
        let last = Tensor::cat(&last, 1).map_err(err("mfn"))?;
        self.out.forward(&last, pass)
    }

    /// The memory after the last step, B × M, from the attended states (B × T × W) and the
    /// proposals (B × T × M): one fused op on the CPU, candle's ops elsewhere.
    fn memory(&self, attended: &Tensor, proposal: &Tensor, pass: &mut Pass<'_>) -> Result<Tensor> {
        let e = err("mfn memory");
        let window = attended.dim(2).map_err(&e)?;
        let parts = self.memory_parts(window).map_err(&e)?;
        // What the gates' first layers read of the attended states, every step at once.
        let pre = Linear::from_parts(parts.read.clone(), parts.bias.clone()).forward(attended)?;
        // The op drops whatever rates it is given: none outside training.
        let drops = match pass.train {
            true => [self.gates[0].drop, self.gates[1].drop],
            false => [0.0; 2],
        };
        if !attended.device().is_cpu() {
            return memory_by_ops(&pre, proposal, &parts, drops, pass);
        }
        let [(w1, b1), (w2, b2)] = &parts.second;
        let packed = FusedMemory::packed(&parts.columns, [(w1, b1), (w2, b2)]).map_err(&e)?;
        let op = FusedMemory::new(
            parts.hidden,
            self.memory,
            (drops, pass.rng.random::<u64>()),
            pass.train,
        );
        pre.contiguous()
            .and_then(|pre| pre.apply_op3(&proposal.contiguous()?, &packed, op))
            .map_err(&e)
    }

    /// The gates' weights as the recurrence takes them, over attended states `window` wide.
    fn memory_parts(&self, window: usize) -> candle_core::Result<MemoryParts> {
        let m = self.memory;
        let first = [&self.gates[0].fc1, &self.gates[1].fc1];
        let bias = |layer: &Linear| match layer.bias() {
            Some(b) => Ok(b.clone()),
            None => candle_core::bail!("an MFN layer without a bias"),
        };
        let columns = |from: usize, width: usize| -> candle_core::Result<Tensor> {
            let [w1, w2] = first.map(|layer| layer.weight().narrow(1, from, width));
            Tensor::cat(&[w1?, w2?], 0)?.contiguous()
        };
        Ok(MemoryParts {
            read: columns(0, window)?,
            bias: Tensor::cat(&[bias(first[0])?, bias(first[1])?], 0)?,
            columns: columns(window, m)?,
            second: [
                (
                    self.gates[0].fc2.weight().clone(),
                    bias(&self.gates[0].fc2)?,
                ),
                (
                    self.gates[1].fc2.weight().clone(),
                    bias(&self.gates[1].fc2)?,
                ),
            ],
            hidden: [first[0].weight().dim(0)?, first[1].weight().dim(0)?],
        })
    }
}

/// The two gates' weights, arranged for the recurrence: their first layers' columns that
/// read the attended states (`(h₁ + h₂) × W`) and their biases, the columns that read the
/// memory (`(h₁ + h₂) × M`), each gate's second layer and bias, and the widths h₁, h₂.
struct MemoryParts {
    read: Tensor,
    bias: Tensor,
    columns: Tensor,
    second: [(Tensor, Tensor); 2],
    hidden: [usize; 2],
}

/// The window of cell states at every step: the three modalities' states before the step
/// (zero before the first) and after it, B × T × 2·(Σ hidden).
fn window_of(cell_states: &[Tensor]) -> candle_core::Result<Tensor> {
    let after = Tensor::cat(cell_states, 2)?;
    let (b, t, width) = after.dims3()?;
    let first = Tensor::zeros((b, 1, width), after.dtype(), after.device())?;
    let before = Tensor::cat(&[&first, &after.narrow(1, 0, t - 1)?], 1)?;
    Tensor::cat(&[&before, &after], 2)
}

/// The memory recurrence with candle's ops (any device): from what the gates' first layers
/// read of the attended states (`pre`, B × T × (h₁ + h₂), biases included) and the proposals
/// (B × T × M), step by step as MMSA's loop runs it; each gate's hidden layer dropped at
/// `drops`.
fn memory_by_ops(
    pre: &Tensor,
    proposal: &Tensor,
    parts: &MemoryParts,
    drops: [f32; 2],
    pass: &mut Pass<'_>,
) -> Result<Tensor> {
    let e = err("mfn memory");
    let (b, t, _) = pre.dims3().map_err(&e)?;
    let m = proposal.dim(2).map_err(&e)?;
    let columns = parts.columns.t().map_err(&e)?;
    let mut memory = Tensor::zeros((b, m), pre.dtype(), pre.device()).map_err(&e)?;
    let step_of = |x: &Tensor, s: usize| x.narrow(1, s, 1).and_then(|x| x.squeeze(1));
    for s in 0..t {
        let z = step_of(pre, s)
            .and_then(|p| p.add(&memory.matmul(&columns)?))
            .and_then(|z| z.relu())
            .map_err(&e)?;
        let mut gates = Vec::with_capacity(2);
        let mut offset = 0;
        for (gate, (w, bias)) in parts.second.iter().enumerate() {
            let width = parts.hidden[gate];
            let hidden = dropout(&z.narrow(1, offset, width).map_err(&e)?, drops[gate], pass)?;
            offset += width;
            let value = hidden
                .matmul(&w.t().map_err(&e)?)
                .and_then(|v| v.broadcast_add(bias))
                .and_then(|v| candle_nn::ops::sigmoid(&v))
                .map_err(&e)?;
            gates.push(value);
        }
        memory = gates[0]
            .mul(&memory)
            .and_then(|kept| kept.add(&gates[1].mul(&step_of(proposal, s)?)?))
            .map_err(&e)?;
    }
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The largest absolute difference between `a` and `b`.
    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar())
            .unwrap()
    }

    fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Var {
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// The fused memory equals the recurrence from candle's ops, forward and backward, over
    /// more rows than one block (dropout off: the two draw their masks differently).
    #[test]
    fn fused_memory_equals_ops() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (b, t, m, hidden) = (37, 6, 5, [4, 3]);
        let pre = random(&[b, t, 7], &mut rng);
        let proposal = random(&[b, t, m], &mut rng);
        let parts = MemoryParts {
            read: random(&[7, 9], &mut rng).as_tensor().clone(),
            bias: random(&[7], &mut rng).as_tensor().clone(),
            columns: random(&[7, m], &mut rng).as_tensor().clone(),
            second: [
                (
                    random(&[m, 4], &mut rng).as_tensor().clone(),
                    random(&[m], &mut rng).as_tensor().clone(),
                ),
                (
                    random(&[m, 3], &mut rng).as_tensor().clone(),
                    random(&[m], &mut rng).as_tensor().clone(),
                ),
            ],
            hidden,
        };
        let columns = Var::from_tensor(&parts.columns).unwrap();
        let seconds = parts
            .second
            .each_ref()
            .map(|(w, b)| (Var::from_tensor(w).unwrap(), Var::from_tensor(b).unwrap()));
        let parts = MemoryParts {
            columns: columns.as_tensor().clone(),
            second: seconds
                .each_ref()
                .map(|(w, b)| (w.as_tensor().clone(), b.as_tensor().clone())),
            ..parts
        };
        let target = random(&[b, m], &mut rng);
        let loss = |memory: Tensor| memory.mul(target.as_tensor()).unwrap().sum_all().unwrap();
        let mut draws = ChaCha8Rng::seed_from_u64(0);
        let mut pass = Pass {
            train: true,
            rng: &mut draws,
        };
        let by_ops = memory_by_ops(&pre, &proposal, &parts, [0.0; 2], &mut pass).unwrap();
        let [(w1, b1), (w2, b2)] = &parts.second;
        let packed = FusedMemory::packed(&parts.columns, [(w1, b1), (w2, b2)]).unwrap();
        let fused = pre
            .as_tensor()
            .apply_op3(
                proposal.as_tensor(),
                &packed,
                FusedMemory::new(hidden, m, ([0.0; 2], 7), true),
            )
            .unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let diff = max_difference(a, b);
            assert!(diff < 1e-5, "{what} differs by {diff}");
        };
        close(&fused, &by_ops, "memory");
        let want = loss(by_ops).backward().unwrap();
        let got = loss(fused).backward().unwrap();
        let mut vars = vec![
            ("pre", &pre),
            ("proposal", &proposal),
            ("columns", &columns),
        ];
        for (w, b) in &seconds {
            vars.push(("second layer", w));
            vars.push(("second bias", b));
        }
        for (what, var) in vars {
            close(got.get(var).unwrap(), want.get(var).unwrap(), what);
        }
    }

    /// With dropout, the fused memory equals the recurrence from candle's ops given the masks
    /// the op draws (per row, step and gate from its seed), forward and backward; the same seed
    /// gives the same memory, another seed another.
    #[test]
    fn fused_memory_drops_as_its_masks_say() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (b, t, m, hidden, rates) = (21, 4, 3, [6, 5], [0.5, 0.3]);
        let pre = random(&[b, t, 11], &mut rng);
        let proposal = random(&[b, t, m], &mut rng);
        let columns = random(&[11, m], &mut rng);
        let second = [
            (random(&[m, 6], &mut rng), random(&[m], &mut rng)),
            (random(&[m, 5], &mut rng), random(&[m], &mut rng)),
        ];
        let fused = |seed: u64| {
            let [(w1, b1), (w2, b2)] = &second;
            let packed = FusedMemory::packed(
                columns.as_tensor(),
                [
                    (w1.as_tensor(), b1.as_tensor()),
                    (w2.as_tensor(), b2.as_tensor()),
                ],
            )
            .unwrap();
            pre.as_tensor()
                .apply_op3(
                    proposal.as_tensor(),
                    &packed,
                    FusedMemory::new(hidden, m, (rates, seed), true),
                )
                .unwrap()
        };
        // The recurrence by candle's ops with the op's masks.
        let mut memory = Tensor::zeros((b, m), candle_core::DType::F32, &Device::Cpu).unwrap();
        for s in 0..t {
            let z = pre
                .narrow(1, s, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
                .add(&memory.matmul(&columns.t().unwrap()).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            let mut gates = Vec::new();
            let mut offset = 0;
            for (gate, (w, bias)) in second.iter().enumerate() {
                let width = hidden[gate];
                let factors: Vec<f32> = (0..b)
                    .flat_map(|r| {
                        let stream = ((r * t + s) * 2 + gate) as u64;
                        crate::train::nn::dropout_factors(rates[gate], 9, stream, width)
                    })
                    .collect();
                let factors = Tensor::from_vec(factors, (b, width), &Device::Cpu).unwrap();
                let dropped = z.narrow(1, offset, width).unwrap().mul(&factors).unwrap();
                offset += width;
                let value = dropped
                    .matmul(&w.t().unwrap())
                    .unwrap()
                    .broadcast_add(bias.as_tensor())
                    .unwrap();
                gates.push(candle_nn::ops::sigmoid(&value).unwrap());
            }
            let proposal_s = proposal.narrow(1, s, 1).unwrap().squeeze(1).unwrap();
            memory = gates[0]
                .mul(&memory)
                .unwrap()
                .add(&gates[1].mul(&proposal_s).unwrap())
                .unwrap();
        }
        let got = fused(9);
        let diff = max_difference(&got, &memory);
        assert!(diff < 1e-5, "memory differs by {diff}");
        let target = random(&[b, m], &mut rng);
        let loss = |x: &Tensor| x.mul(target.as_tensor()).unwrap().sum_all().unwrap();
        let (want, have) = (
            loss(&memory).backward().unwrap(),
            loss(&got).backward().unwrap(),
        );
        let mut vars = vec![&pre, &proposal, &columns];
        for (w, bias) in &second {
            vars.extend([w, bias]);
        }
        for var in vars {
            let diff = max_difference(have.get(var).unwrap(), want.get(var).unwrap());
            assert!(diff < 1e-4, "a gradient differs by {diff}");
        }
        let values = |x: Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(fused(9)), values(got.clone()));
        assert_ne!(values(fused(10)), values(got));
    }
}
