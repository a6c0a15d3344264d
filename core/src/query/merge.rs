//! The accumulators behind each query method: a merged flame graph, a merged pprof profile,
//! time series, and the series labels the metadata methods list.
//!
//! Each is an [`Accumulator`]: workers extract a part per dataset, the driver merges parts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::engine::{Accumulator, Selected, StackSums};
use super::tree::{FlameGraph, FlameTree};
use crate::labels::Labels;
use crate::pprof::proto;
use crate::profile_type::ProfileType;
use crate::symbols::{Symbols, SymbolsBuilder};

/// `SelectMergeStacktraces`: stacks merged by function name into a flame graph.
pub struct FlameGraphMerge {
    tree: FlameTree,
    max_nodes: usize,
}

impl FlameGraphMerge {
    /// `max_nodes` 0 keeps every node.
    pub fn new(max_nodes: usize) -> Self {
        FlameGraphMerge {
            tree: FlameTree::default(),
            max_nodes,
        }
    }
}

impl Accumulator for FlameGraphMerge {
    type Part = FlameTree;
    type Spec = ();
    type Output = FlameGraph;

    fn needs_samples(&self) -> bool {
        true
    }

    fn spec(&self) {}

    fn extract(_: &(), selected: Selected<'_>) -> FlameTree {
        let mut tree = FlameTree::default();
        if let Some(stacks) = selected.stacks {
            tree.add_stacks(&stacks.symbols, stacks.values.iter().copied());
        }
        tree
    }

    fn merge(&mut self, part: FlameTree) {
        self.tree.merge(&part);
    }

    fn render(&self) -> FlameGraph {
        self.tree.render(self.max_nodes)
    }
}

/// `SelectMergeProfile`: stacks merged by location into one pprof profile, with functions,
/// lines and mappings as they were ingested (sample labels are dropped, as Pyroscope does).
pub struct ProfileMerge {
    profile_type: ProfileType,
    start_ns: i64,
    end_ns: i64,
    symbols: SymbolsBuilder,
    /// Summed value per stack id of `symbols`.
    values: Vec<i64>,
    period: i64,
}

impl ProfileMerge {
    pub fn new(profile_type: ProfileType, start_ns: i64, end_ns: i64) -> Self {
        ProfileMerge {
            profile_type,
            start_ns,
            end_ns,
            symbols: SymbolsBuilder::new(),
            values: Vec::new(),
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

    fn spec(&self) {}

    fn extract(_: &(), selected: Selected<'_>) -> StackSums {
        selected.stacks.expect("samples were requested")
    }

    fn merge(&mut self, part: StackSums) {
        let remap = self.symbols.import(&part.symbols);
        for (stack, value) in part.values {
            let id = remap.stacks[stack as usize] as usize;
            if id >= self.values.len() {
                self.values.resize(id + 1, 0);
            }
            self.values[id] = self.values[id].saturating_add(value);
        }
        self.period = self.period.max(part.period);
    }

    fn render(&self) -> proto::Profile {
        let symbols = self.symbols.clone().finish();
        to_pprof(&symbols, &self.values, self)
    }
}

/// Writes the stacks with a non-zero value as a pprof profile, keeping only the symbols they
/// use. pprof ids start at 1; our mapping 0 ("none") becomes mapping id 0.
fn to_pprof(symbols: &Symbols, values: &[i64], merge: &ProfileMerge) -> proto::Profile {
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
    for (stack, &value) in values.iter().enumerate() {
        if value == 0 {
            continue;
        }
        let mut location_id = Vec::with_capacity(symbols.stack(stack as u32).len());
        for &loc in symbols.stack(stack as u32) {
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
        out.sample.push(proto::Sample {
            location_id,
            value: vec![value],
            label: Vec::new(),
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
