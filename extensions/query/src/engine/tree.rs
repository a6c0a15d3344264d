//! The call tree a flame graph query merges stacks into, and its rendering in Pyroscope's
//! flame graph layout (`names`, `levels`, `total`, `max_self`) with `max_nodes` pruning.
//!
//! [`NameTable`] holds a query's frame names; [`CallTree`] sums name-id paths into nodes and
//! renders them; [`FlameTree`] is the two together for callers with one table of symbols. A
//! tree is a sum, so the order stacks arrive in never changes the result, and rendering sorts
//! children by name, as Pyroscope does, so the output does not depend on it either.

use std::hash::BuildHasher;

use flamepipe_core::symbols::{FrameName, Symbols};
use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// A flame graph in Pyroscope's `querier.v1.FlameGraph` layout.
///
/// `levels[d]` holds the nodes at depth `d`, four values each: x offset (relative to the end
/// of the previous node on the level), total, self, and index into `names`. Level 0 is the
/// root node, named `total`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlameGraph {
    pub names: Vec<String>,
    pub levels: Vec<Vec<i64>>,
    pub total: i64,
    pub max_self: i64,
}

/// The name Pyroscope gives the node that gathers pruned children.
pub const OTHER: &str = "other";
const ROOT_NAME: &str = "total";

#[derive(Clone, Copy, Debug)]
struct Node {
    parent: u32,
    name: u32,
    total: i64,
    self_value: i64,
}

/// Frame names by id: the flame graph's alphabet, shared by every tree of a query.
#[derive(Clone, Debug, Default)]
pub struct NameTable {
    names: Vec<Box<str>>,
    ids: HashTable<u32>,
    hasher: RandomState,
}

impl NameTable {
    pub fn id(&mut self, name: &str) -> u32 {
        let hash = self.hasher.hash_one(name);
        let NameTable { names, ids, hasher } = self;
        *ids.entry(
            hash,
            |&id| &*names[id as usize] == name,
            |&id| hasher.hash_one(&*names[id as usize]),
        )
        .or_insert_with(|| {
            names.push(name.into());
            names.len() as u32 - 1
        })
        .get()
    }

    pub fn get(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Name ids of a location's frames, root-most first (inlined callers before callees).
    pub fn frames(&mut self, symbols: &Symbols, location: u32, out: &mut Vec<u32>) {
        let start = out.len();
        for name in symbols.frame_names(location) {
            let id = match name {
                FrameName::Function(name) => self.id(name),
                address => self.id(&address.to_string()),
            };
            out.push(id);
        }
        out[start..].reverse();
    }
}

/// The shape of a call tree: nodes keyed by (parent, name id), names kept elsewhere.
#[derive(Clone, Debug)]
pub struct CallTree {
    nodes: Vec<Node>,
    /// (parent, name) -> child node.
    children: HashTable<u32>,
    hasher: RandomState,
}

impl Default for CallTree {
    fn default() -> Self {
        CallTree {
            nodes: vec![Node {
                parent: 0,
                name: u32::MAX,
                total: 0,
                self_value: 0,
            }],
            children: HashTable::new(),
            hasher: RandomState::default(),
        }
    }
}

/// A merged call tree keyed by function name, with its own names. Node 0 is the root.
#[derive(Clone, Debug, Default)]
pub struct FlameTree {
    names: NameTable,
    tree: CallTree,
}

impl FlameTree {
    pub fn total(&self) -> i64 {
        self.tree.total()
    }

    /// Nodes below the root.
    pub fn node_count(&self) -> usize {
        self.tree.node_count()
    }

    pub fn name_id(&mut self, name: &str) -> u32 {
        self.names.id(name)
    }

    /// Adds `value` along a path of name ids, root first.
    pub fn add_path(&mut self, path: &[u32], value: i64) {
        self.tree.add_path(path, value);
    }

    /// Adds stacks of `symbols` with their (summed) values. Each location contributes its
    /// lines outermost first, so inlined functions show as their own frames, as in pprof.
    pub fn add_stacks(&mut self, symbols: &Symbols, stacks: impl IntoIterator<Item = (u32, i64)>) {
        // Name ids of each location's frames, root-most first, resolved once per location.
        let mut frames: Vec<Option<Box<[u32]>>> = vec![None; symbols.locations.len()];
        let mut path = Vec::new();
        let mut scratch = Vec::new();
        for (stack, value) in stacks {
            path.clear();
            for &location in symbols.stack(stack).iter().rev() {
                let names = frames[location as usize].get_or_insert_with(|| {
                    scratch.clear();
                    self.names.frames(symbols, location, &mut scratch);
                    scratch.as_slice().into()
                });
                path.extend_from_slice(names);
            }
            self.tree.add_path(&path, value);
        }
    }

    /// Adds every node of `other` to this tree.
    pub fn merge(&mut self, other: &FlameTree) {
        let names: Vec<u32> = other.names.names.iter().map(|n| self.names.id(n)).collect();
        self.tree.merge(&other.tree, &names);
    }

    /// Renders the tree, gathering the children whose totals fall below the `max_nodes`
    /// threshold of each node into one `other` node (`max_nodes` 0 keeps every node).
    pub fn render(&self, max_nodes: usize) -> FlameGraph {
        self.tree.render(&self.names, max_nodes)
    }
}

impl CallTree {
    pub fn total(&self) -> i64 {
        self.nodes[0].total
    }

    /// Nodes below the root.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - 1
    }

    fn child(&mut self, parent: u32, name: u32) -> u32 {
        let hash = self.hasher.hash_one((parent, name));
        let CallTree {
            nodes,
            children,
            hasher,
        } = self;
        *children
            .entry(
                hash,
                |&id| {
                    let n = &nodes[id as usize];
                    n.parent == parent && n.name == name
                },
                |&id| {
                    let n = &nodes[id as usize];
                    hasher.hash_one((n.parent, n.name))
                },
            )
            .or_insert_with(|| {
                nodes.push(Node {
                    parent,
                    name,
                    total: 0,
                    self_value: 0,
                });
                nodes.len() as u32 - 1
            })
            .get()
    }

    /// Adds `value` along a path of name ids, root first.
    pub fn add_path(&mut self, path: &[u32], value: i64) {
        if value == 0 {
            return;
        }
        self.nodes[0].total = self.nodes[0].total.saturating_add(value);
        let mut node = 0;
        for &name in path {
            node = self.child(node, name);
            let n = &mut self.nodes[node as usize];
            n.total = n.total.saturating_add(value);
        }
        let n = &mut self.nodes[node as usize];
        n.self_value = n.self_value.saturating_add(value);
    }

    /// Adds every node of `other`, whose name ids map to this tree's through `names`.
    pub fn merge(&mut self, other: &CallTree, names: &[u32]) {
        self.nodes[0].total = self.nodes[0].total.saturating_add(other.nodes[0].total);
        self.nodes[0].self_value = self.nodes[0].self_value.saturating_add(other.nodes[0].self_value);
        // Nodes are created parent first, so a node's parent is always mapped before it.
        let mut mapped = Vec::with_capacity(other.nodes.len());
        mapped.push(0u32);
        for n in &other.nodes[1..] {
            let node = self.child(mapped[n.parent as usize], names[n.name as usize]);
            let mine = &mut self.nodes[node as usize];
            mine.total = mine.total.saturating_add(n.total);
            mine.self_value = mine.self_value.saturating_add(n.self_value);
            mapped.push(node);
        }
    }

    /// The smallest total a node needs to be drawn when at most `max_nodes` are: the
    /// `max_nodes`-th largest total (Pyroscope's rule; ties may keep a few more).
    fn min_value(&self, max_nodes: usize) -> i64 {
        if max_nodes == 0 || self.node_count() <= max_nodes {
            return i64::MIN;
        }
        let mut totals: Vec<i64> = self.nodes[1..].iter().map(|n| n.total).collect();
        let (_, nth, _) = totals.select_nth_unstable_by(max_nodes - 1, |a, b| b.cmp(a));
        *nth
    }

    /// Renders the tree with names from `names`, gathering the children whose totals fall
    /// below the `max_nodes` threshold of each node into one `other` node (`max_nodes` 0 keeps
    /// every node).
    pub fn render(&self, names: &NameTable, max_nodes: usize) -> FlameGraph {
        let names = &names.names;
        let min_value = self.min_value(max_nodes);
        // Children of each node, sorted by name, laid out flat (offsets per node).
        let mut offsets = vec![0u32; self.nodes.len() + 1];
        for n in &self.nodes[1..] {
            offsets[n.parent as usize + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut fill = offsets.clone();
        let mut kids = vec![0u32; self.nodes.len() - 1];
        for (id, n) in self.nodes.iter().enumerate().skip(1) {
            let slot = &mut fill[n.parent as usize];
            kids[*slot as usize] = id as u32;
            *slot += 1;
        }
        for i in 0..self.nodes.len() {
            let children = &mut kids[offsets[i] as usize..offsets[i + 1] as usize];
            children.sort_unstable_by(|&a, &b| {
                names[self.nodes[a as usize].name as usize].cmp(&names[self.nodes[b as usize].name as usize])
            });
        }

        let mut out = Renderer::default();
        // (node or None for an `other` node with its value, depth, absolute x)
        enum Item {
            Node(u32),
            Other(i64),
        }
        let mut stack = vec![(Item::Node(0), 0usize, 0i64)];
        while let Some((item, depth, x)) = stack.pop() {
            let node = match item {
                Item::Other(value) => {
                    out.push(depth, x, value, value, OTHER);
                    continue;
                }
                Item::Node(id) => id,
            };
            let n = &self.nodes[node as usize];
            let name = if node == 0 { ROOT_NAME } else { &names[n.name as usize] };
            out.push(depth, x, n.total, n.self_value, name);
            // Pyroscope draws a node's self part first, then its children left to right.
            let mut child_x = x + n.self_value;
            let mut drawn = Vec::new();
            let mut other = 0i64;
            for &child in &kids[offsets[node as usize] as usize..offsets[node as usize + 1] as usize] {
                let c = &self.nodes[child as usize];
                if c.total >= min_value && &*names[c.name as usize] != OTHER {
                    drawn.push((Item::Node(child), depth + 1, child_x));
                    child_x += c.total;
                } else {
                    other += c.total;
                }
            }
            if other != 0 {
                drawn.push((Item::Other(other), depth + 1, child_x));
            }
            // Pushed in reverse so that they pop left to right: each level then fills in x order.
            stack.extend(drawn.into_iter().rev());
        }
        FlameGraph {
            names: out.names,
            levels: out.levels,
            total: self.total(),
            max_self: out.max_self,
        }
    }
}

#[derive(Default)]
struct Renderer {
    names: Vec<String>,
    name_index: std::collections::HashMap<String, i64>,
    levels: Vec<Vec<i64>>,
    /// Where the previous node of each level ends.
    level_end: Vec<i64>,
    max_self: i64,
}

impl Renderer {
    fn push(&mut self, depth: usize, x: i64, total: i64, self_value: i64, name: &str) {
        let index = match self.name_index.get(name) {
            Some(&i) => i,
            None => {
                let i = self.names.len() as i64;
                self.names.push(name.to_string());
                self.name_index.insert(name.to_string(), i);
                i
            }
        };
        if depth == self.levels.len() {
            self.levels.push(Vec::new());
            self.level_end.push(0);
        }
        self.levels[depth].extend_from_slice(&[x - self.level_end[depth], total, self_value, index]);
        self.level_end[depth] = x + total;
        self.max_self = self.max_self.max(self_value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(stacks: &[(&[&str], i64)]) -> FlameTree {
        let mut t = FlameTree::default();
        for (path, value) in stacks {
            let ids: Vec<u32> = path.iter().map(|n| t.name_id(n)).collect();
            t.add_path(&ids, *value);
        }
        t
    }

    #[test]
    fn renders_pyroscope_layout() {
        let t = tree(&[(&["main", "a"], 3), (&["main", "b"], 5), (&["main"], 2)]);
        let fg = t.render(0);
        assert_eq!(fg.names, ["total", "main", "a", "b"]);
        assert_eq!(fg.total, 10);
        assert_eq!(fg.max_self, 5);
        assert_eq!(fg.levels[0], [0, 10, 0, 0]);
        assert_eq!(fg.levels[1], [0, 10, 2, 1]);
        // main's self (2) comes first, so a starts at x=2; b follows a directly.
        assert_eq!(fg.levels[2], [2, 3, 3, 2, 0, 5, 5, 3]);
    }

    #[test]
    fn prunes_small_nodes_into_other() {
        let t = tree(&[
            (&["main", "big"], 100),
            (&["main", "small1"], 1),
            (&["main", "small2"], 2),
        ]);
        // 4 nodes; keep 2 (main=103, big=100): small ones become `other`.
        let fg = t.render(2);
        assert_eq!(fg.names, ["total", "main", "big", "other"]);
        assert_eq!(fg.levels[2], [0, 100, 100, 2, 0, 3, 3, 3]);
        assert_eq!(fg.total, 103);
    }

    #[test]
    fn merging_is_order_independent_and_sums() {
        let a = tree(&[(&["main", "a"], 3), (&["x"], 1)]);
        let b = tree(&[(&["main", "b"], 5), (&["main", "a"], 1)]);
        let mut ab = FlameTree::default();
        ab.merge(&a);
        ab.merge(&b);
        let mut ba = FlameTree::default();
        ba.merge(&b);
        ba.merge(&a);
        assert_eq!(ab.render(0), ba.render(0));
        assert_eq!(ab.total(), 10);
        let whole = tree(&[
            (&["main", "a"], 3),
            (&["x"], 1),
            (&["main", "b"], 5),
            (&["main", "a"], 1),
        ]);
        assert_eq!(whole.render(0), ab.render(0));
    }
}
