//! The accumulators behind each query method: a merged flame graph, a merged pprof profile,
//! time series, and the series labels the metadata methods list.
//!
//! Each is an [`Accumulator`]: workers extract a part per dataset, the driver merges parts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use flamepipe_core::formats::pprof::proto;
use flamepipe_core::labels::Labels;
use flamepipe_core::profile_type::ProfileType;
use flamepipe_core::symbols::{Symbols, SymbolsBuilder};
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::run::{Accumulator, Selected, StackSums};
use super::tree::{CallTree, FlameGraph, NameTable};

/// `SelectMergeStacktraces`: stacks merged by function name into a flame graph.
///
/// Workers turn each dataset's stacks into paths of query-wide name ids (hashed on the
/// worker); the driver only sums values per distinct path, one probe each. The tree is built
/// from the distinct paths when a snapshot or the result is rendered, so stacks that many
/// datasets share are walked once, not once per dataset.
pub struct FlameGraphMerge {
    names: Arc<RwLock<NameTable>>,
    paths: PathTable,
    max_nodes: usize,
    /// Paths are hashed on workers and probed on the driver, so all use this one.
    hasher: RandomState,
}

impl FlameGraphMerge {
    /// `max_nodes` 0 keeps every node.
    pub fn new(max_nodes: usize) -> Self {
        FlameGraphMerge {
            names: Arc::default(),
            paths: PathTable::default(),
            max_nodes,
            hasher: RandomState::default(),
        }
    }
}

/// Name-id paths (root first) with summed values; rows keep their hashes for rehashing.
#[derive(Default)]
pub struct PathTable {
    offsets: Vec<u32>,
    items: Vec<u32>,
    hashes: Vec<u64>,
    values: Vec<i64>,
    ids: HashTable<u32>,
}

impl PathTable {
    fn path(&self, id: usize) -> &[u32] {
        &self.items[self.offsets[id] as usize..self.offsets[id + 1] as usize]
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    /// Appends a path (not deduplicated: parts are built from distinct stacks).
    fn push(&mut self, path: &[u32], hash: u64, value: i64) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.items.extend_from_slice(path);
        self.offsets.push(self.items.len() as u32);
        self.hashes.push(hash);
        self.values.push(value);
    }

    /// Adds `value` to `path`, whose hash the caller computed.
    fn add(&mut self, path: &[u32], hash: u64, value: i64) {
        let PathTable {
            offsets,
            items,
            hashes,
            values,
            ids,
        } = self;
        let get = |id: u32| &items[offsets[id as usize] as usize..offsets[id as usize + 1] as usize];
        if let Some(&id) = ids.find(hash, |&id| get(id) == path) {
            let v = &mut values[id as usize];
            *v = v.saturating_add(value);
            return;
        }
        let id = values.len() as u32;
        ids.insert_unique(hash, id, |&id| hashes[id as usize]);
        self.push(path, hash, value);
    }
}

/// What workers share: the query's names and the hasher paths are hashed with.
pub struct FlameGraphSpec {
    names: Arc<RwLock<NameTable>>,
    hasher: RandomState,
}

impl Accumulator for FlameGraphMerge {
    type Part = PathTable;
    type Spec = FlameGraphSpec;
    type Output = FlameGraph;

    fn needs_samples(&self) -> bool {
        true
    }

    fn spec(&self) -> FlameGraphSpec {
        FlameGraphSpec {
            names: Arc::clone(&self.names),
            hasher: self.hasher.clone(),
        }
    }

    fn extract(spec: &FlameGraphSpec, selected: Selected<'_>) -> PathTable {
        let mut part = PathTable::default();
        let Some(stacks) = selected.stacks else {
            return part;
        };
        let symbols = &stacks.symbols;
        // Name ids of the frames of every location the stacks use, resolved under one lock
        // and once per function. A location of one frame (no inlining) is stored in `single`.
        let mut used = vec![false; symbols.locations.len()];
        for &(stack, _) in &stacks.values {
            for &location in symbols.stack(stack) {
                used[location as usize] = true;
            }
        }
        const MANY: u32 = u32::MAX;
        let mut single = vec![MANY; symbols.locations.len()];
        let mut frame_offsets = vec![0u32; symbols.locations.len() + 1];
        let mut frames = Vec::new();
        {
            let mut names = spec.names.write().unwrap_or_else(|e| e.into_inner());
            let mut function_names = vec![MANY; symbols.functions.len()];
            for (location, &is_used) in used.iter().enumerate() {
                if is_used {
                    let start = frames.len();
                    let lines = &symbols.locations[location].lines;
                    if lines.is_empty() {
                        names.frames(symbols, location as u32, &mut frames);
                    }
                    // Lines are innermost first; a path runs root first.
                    for line in lines.iter().rev() {
                        let id = &mut function_names[line.function as usize];
                        if *id == MANY {
                            *id = names.id(symbols.str(symbols.functions[line.function as usize].name));
                        }
                        frames.push(*id);
                    }
                    if frames.len() == start + 1 {
                        single[location] = frames[start];
                    }
                }
                frame_offsets[location + 1] = frames.len() as u32;
            }
        }
        let mut path = Vec::new();
        for &(stack, value) in &stacks.values {
            path.clear();
            for &location in symbols.stack(stack).iter().rev() {
                let l = location as usize;
                match single[l] {
                    MANY => path.extend_from_slice(&frames[frame_offsets[l] as usize..frame_offsets[l + 1] as usize]),
                    name => path.push(name),
                }
            }
            part.push(&path, spec.hasher.hash_one(path.as_slice()), value);
        }
        part
    }

    fn merge(&mut self, part: PathTable) {
        for id in 0..part.len() {
            self.paths.add(part.path(id), part.hashes[id], part.values[id]);
        }
    }

    fn render(&self) -> FlameGraph {
        let mut tree = CallTree::default();
        for id in 0..self.paths.len() {
            tree.add_path(self.paths.path(id), self.paths.values[id]);
        }
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        tree.render(&names, self.max_nodes)
    }
}

/// `SelectMergeProfile`: stacks merged by location into one pprof profile, with functions,
/// lines and mappings as they were ingested (sample labels are dropped, as Pyroscope does).
pub struct ProfileMerge {
    profile_type: ProfileType,
    start_ns: i64,
    end_ns: i64,
    symbols: SymbolsBuilder,
    /// Summed value per (stack id, label set id) of `symbols`; label set 0 is no labels.
    values: HashMap<(u32, u32), i64>,
    period: i64,
}

impl ProfileMerge {
    pub fn new(profile_type: ProfileType, start_ns: i64, end_ns: i64) -> Self {
        ProfileMerge {
            profile_type,
            start_ns,
            end_ns,
            symbols: SymbolsBuilder::new(),
            values: HashMap::new(),
            period: 0,
        }
    }
}

impl Accumulator for ProfileMerge {
    type Part = StackSums;
    type Spec = ();
    type Output = proto::Profile;

    fn needs_samples(&self) -> bool {
        true
    }

    fn keeps_sample_labels(&self) -> bool {
        true
    }

    fn spec(&self) {}

    fn extract(_: &(), selected: Selected<'_>) -> StackSums {
        selected.stacks.expect("samples were requested")
    }

    fn merge(&mut self, part: StackSums) {
        let remap = self.symbols.import(&part.symbols);
        let unlabelled = part.values.into_iter().map(|(stack, value)| (stack, 0, value));
        for (stack, labels, value) in unlabelled.chain(part.labelled) {
            let key = (remap.stacks[stack as usize], remap.label_sets[labels as usize]);
            let sum = self.values.entry(key).or_default();
            *sum = sum.saturating_add(value);
        }
        self.period = self.period.max(part.period);
    }

    fn render(&self) -> proto::Profile {
        let symbols = self.symbols.clone().finish();
        let mut values: Vec<(u32, u32, i64)> = self
            .values
            .iter()
            .filter(|&(_, &v)| v != 0)
            .map(|(&(stack, labels), &v)| (stack, labels, v))
            .collect();
        values.sort_unstable();
        to_pprof(&symbols, &values, self)
    }
}

/// Writes (stack, sample labels, value) rows as a pprof profile, keeping only the symbols they
/// use. pprof ids start at 1; our mapping 0 ("none") becomes mapping id 0.
fn to_pprof(symbols: &Symbols, values: &[(u32, u32, i64)], merge: &ProfileMerge) -> proto::Profile {
    let mut out = proto::Profile::default();
    let mut strings: HashMap<String, i64> = HashMap::new();
    let mut string = |out: &mut proto::Profile, s: &str| -> i64 {
        if let Some(&id) = strings.get(s) {
            return id;
        }
        let id = out.string_table.len() as i64;
        out.string_table.push(s.to_string());
        strings.insert(s.to_string(), id);
        id
    };
    string(&mut out, "");
    let t = &merge.profile_type;
    let sample_type = proto::ValueType {
        r#type: string(&mut out, &t.sample_type),
        unit: string(&mut out, &t.sample_unit),
    };
    out.sample_type.push(sample_type);
    out.period_type = Some(proto::ValueType {
        r#type: string(&mut out, &t.period_type),
        unit: string(&mut out, &t.period_unit),
    });
    out.period = merge.period;
    out.time_nanos = merge.start_ns;
    out.duration_nanos = merge.end_ns.saturating_sub(merge.start_ns).max(0);

    let mut mapping_ids = vec![0u64; symbols.mappings.len()];
    let mut function_ids = vec![0u64; symbols.functions.len()];
    let mut location_ids = vec![0u64; symbols.locations.len()];
    for &(stack, labels, value) in values {
        let mut location_id = Vec::with_capacity(symbols.stack(stack).len());
        for &loc in symbols.stack(stack) {
            if location_ids[loc as usize] == 0 {
                let l = &symbols.locations[loc as usize];
                let mapping_id = if l.mapping == 0 {
                    0
                } else {
                    if mapping_ids[l.mapping as usize] == 0 {
                        let m = &symbols.mappings[l.mapping as usize];
                        let id = out.mapping.len() as u64 + 1;
                        let filename = string(&mut out, symbols.str(m.filename));
                        let build_id = string(&mut out, symbols.str(m.build_id));
                        out.mapping.push(proto::Mapping {
                            id,
                            memory_start: m.memory_start,
                            memory_limit: m.memory_limit,
                            file_offset: m.file_offset,
                            filename,
                            build_id,
                            has_functions: true,
                            ..Default::default()
                        });
                        mapping_ids[l.mapping as usize] = id;
                    }
                    mapping_ids[l.mapping as usize]
                };
                let mut lines = Vec::with_capacity(l.lines.len());
                for line in &l.lines {
                    if function_ids[line.function as usize] == 0 {
                        let f = &symbols.functions[line.function as usize];
                        let id = out.function.len() as u64 + 1;
                        let function = proto::Function {
                            id,
                            name: string(&mut out, symbols.str(f.name)),
                            system_name: string(&mut out, symbols.str(f.system_name)),
                            filename: string(&mut out, symbols.str(f.filename)),
                            start_line: f.start_line,
                        };
                        out.function.push(function);
                        function_ids[line.function as usize] = id;
                    }
                    lines.push(proto::Line {
                        function_id: function_ids[line.function as usize],
                        line: line.line,
                        ..Default::default()
                    });
                }
                let id = out.location.len() as u64 + 1;
                out.location.push(proto::Location {
                    id,
                    mapping_id,
                    address: l.address,
                    line: lines,
                    ..Default::default()
                });
                location_ids[loc as usize] = id;
            }
            location_id.push(location_ids[loc as usize]);
        }
        let label = symbols
            .label_set(labels)
            .iter()
            .map(|l| proto::Label {
                key: string(&mut out, symbols.str(l.key)),
                str: if l.str == 0 {
                    0
                } else {
                    string(&mut out, symbols.str(l.str))
                },
                num: l.num,
                num_unit: if l.num_unit == 0 {
                    0
                } else {
                    string(&mut out, symbols.str(l.num_unit))
                },
            })
            .collect();
        out.sample.push(proto::Sample {
            location_id,
            value: vec![value],
            label,
        });
    }
    out
}

/// How `SelectSeries` combines the profiles that fall in one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aggregation {
    #[default]
    Sum,
    Average,
}

/// One time series: its group labels and (unix milliseconds, value) points by time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(i64, f64)>,
}

#[derive(Clone, Debug)]
pub struct SeriesSpec {
    pub start_ns: i64,
    pub step_ns: i64,
    pub group_by: Vec<String>,
}

/// Step number -> (sum of profile totals, profiles).
type Steps = BTreeMap<i64, (i64, u64)>;

/// `SelectSeries`: per group, the profiles' totals per step, from the series index alone
/// (each profile's total is stored there).
pub struct SeriesMerge {
    spec: SeriesSpec,
    aggregation: Aggregation,
    limit: Option<usize>,
    groups: BTreeMap<Vec<Option<String>>, Steps>,
}

impl SeriesMerge {
    pub fn new(spec: SeriesSpec, aggregation: Aggregation, limit: Option<usize>) -> Self {
        SeriesMerge {
            spec,
            aggregation,
            limit,
            groups: BTreeMap::new(),
        }
    }
}

/// (group label values, step number, profile total) per selected profile.
pub type SeriesPart = Vec<(Vec<Option<String>>, i64, i64)>;

impl Accumulator for SeriesMerge {
    type Part = SeriesPart;
    type Spec = SeriesSpec;
    type Output = Vec<Series>;

    fn needs_samples(&self) -> bool {
        false
    }

    fn spec(&self) -> SeriesSpec {
        self.spec.clone()
    }

    fn extract(spec: &SeriesSpec, selected: Selected<'_>) -> SeriesPart {
        let cols = &selected.index.columns;
        let groups: Vec<Vec<Option<String>>> = selected
            .index
            .series
            .iter()
            .map(|(labels, _)| {
                spec.group_by
                    .iter()
                    .map(|n| labels.get(n).map(str::to_string))
                    .collect()
            })
            .collect();
        selected
            .profiles
            .iter()
            .map(|&p| {
                let step = (cols.profile_timestamp_ns[p] - spec.start_ns) / spec.step_ns.max(1);
                (
                    groups[cols.profile_series[p] as usize].clone(),
                    step,
                    cols.profile_total[p],
                )
            })
            .collect()
    }

    fn merge(&mut self, part: SeriesPart) {
        for (group, step, total) in part {
            let point = self.groups.entry(group).or_default().entry(step).or_default();
            point.0 = point.0.saturating_add(total);
            point.1 += 1;
        }
    }

    fn render(&self) -> Vec<Series> {
        let mut series: Vec<(i64, Series)> = self
            .groups
            .iter()
            .map(|(group, steps)| {
                let labels = self
                    .spec
                    .group_by
                    .iter()
                    .zip(group)
                    .filter_map(|(name, value)| Some((name.clone(), value.clone()?)))
                    .collect();
                let points = steps
                    .iter()
                    .map(|(&step, &(sum, count))| {
                        let at_ns = self.spec.start_ns + step * self.spec.step_ns;
                        let value = match self.aggregation {
                            Aggregation::Sum => sum as f64,
                            Aggregation::Average => sum as f64 / count as f64,
                        };
                        (at_ns.div_euclid(1_000_000), value)
                    })
                    .collect();
                let total = steps.values().map(|&(sum, _)| sum).fold(0i64, i64::saturating_add);
                (total, Series { labels, points })
            })
            .collect();
        if let Some(limit) = self.limit
            && series.len() > limit
        {
            // The `limit` largest series by total, then back in label order.
            series.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.labels.cmp(&b.1.labels)));
            series.truncate(limit);
            series.sort_by(|a, b| a.1.labels.cmp(&b.1.labels));
        }
        series.into_iter().map(|(_, s)| s).collect()
    }
}

/// `Series`, `LabelNames`, `LabelValues` and `ProfileTypes`: the distinct series (labels and
/// profile type) that have profiles in the range, from the series index alone.
#[derive(Default)]
pub struct SeriesLabels {
    series: BTreeSet<(Labels, ProfileType)>,
}

impl Accumulator for SeriesLabels {
    type Part = Vec<(Labels, ProfileType)>;
    type Spec = ();
    type Output = Vec<(Labels, ProfileType)>;

    fn needs_samples(&self) -> bool {
        false
    }

    fn spec(&self) {}

    fn extract(_: &(), selected: Selected<'_>) -> Self::Part {
        let cols = &selected.index.columns;
        let mut ids: Vec<u32> = selected.profiles.iter().map(|&p| cols.profile_series[p]).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|s| selected.index.series[s as usize].clone())
            .collect()
    }

    fn merge(&mut self, part: Self::Part) {
        self.series.extend(part);
    }

    fn render(&self) -> Self::Output {
        self.series.iter().cloned().collect()
    }
}
