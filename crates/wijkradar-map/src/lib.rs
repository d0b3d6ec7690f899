//! CBS area boundaries for the dashboard's maps, as SVG paths.
//!
//! The boundaries ship as TopoJSON (`data/cbs/*_topo.json`): every border
//! between two areas is one arc that both areas refer to. Each arc is
//! simplified once, when the atlas is read (Douglas–Peucker, ends kept), so
//! two neighbours still share exactly the same border: the map has no gaps
//! and no overlaps. Drawing projects longitude and latitude onto a plane
//! (equirectangular around the drawn areas' middle, which is true to within
//! a few tenths of a percent over a gemeente) and writes one path per area.
//!
//! Bron: CBS (CC BY 4.0).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("not TopoJSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("TopoJSON without object `{0}`")]
    NoObject(String),
    #[error("geometry {code}: arc {arc} does not exist")]
    BadArc { code: String, arc: i64 },
}

/// The tolerance arcs are simplified to, in degrees of latitude (about
/// 11 m): below a pixel on a gemeente map 800 pixels wide.
pub const TOLERANCE_DEGREES: f64 = 0.0001;

mod topo {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Topology {
        pub arcs: Vec<Vec<[i64; 2]>>,
        pub transform: Option<Transform>,
        pub objects: std::collections::HashMap<String, Collection>,
    }

    #[derive(Deserialize)]
    pub struct Transform {
        pub scale: [f64; 2],
        pub translate: [f64; 2],
    }

    #[derive(Deserialize)]
    pub struct Collection {
        pub geometries: Vec<Geometry>,
    }

    #[derive(Deserialize)]
    #[serde(tag = "type")]
    pub enum Geometry {
        Polygon {
            arcs: Vec<Vec<i64>>,
            properties: Properties,
        },
        MultiPolygon {
            arcs: Vec<Vec<Vec<i64>>>,
            properties: Properties,
        },
        #[serde(other)]
        Other,
    }

    #[derive(Deserialize)]
    pub struct Properties {
        pub statcode: String,
    }
}

/// One area's outline: its polygons, each a list of rings (outer first,
/// then holes), each ring a list of arcs (`!i` for arc i reversed).
#[derive(Debug, Clone)]
struct Shape {
    polygons: Vec<Vec<Vec<i64>>>,
    /// (min lon, min lat, max lon, max lat).
    bbox: [f64; 4],
}

/// Every area's outline of one level, by CBS code.
#[derive(Debug)]
pub struct Atlas {
    /// Simplified arcs, as (lon, lat).
    arcs: Vec<Vec<[f64; 2]>>,
    shapes: HashMap<String, Shape>,
}

/// A drawing of some areas: the SVG `viewBox` and one path per area found,
/// in the order asked; `missing` the codes without a boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawing {
    pub width: f64,
    pub height: f64,
    pub paths: Vec<(String, String)>,
    pub missing: Vec<String>,
}

impl Atlas {
    /// Reads a TopoJSON topology's object `object`, simplifying every arc to
    /// `tolerance` degrees.
    pub fn parse(topojson: &[u8], object: &str, tolerance: f64) -> Result<Atlas, MapError> {
        let t: topo::Topology = serde_json::from_slice(topojson)?;
        let (scale, translate) = t
            .transform
            .as_ref()
            .map_or(([1.0, 1.0], [0.0, 0.0]), |t| (t.scale, t.translate));
        let quantised = t.transform.is_some();
        let arcs: Vec<Vec<[f64; 2]>> = t
            .arcs
            .iter()
            .map(|arc| {
                let (mut x, mut y) = (0i64, 0i64);
                let points: Vec<[f64; 2]> = arc
                    .iter()
                    .map(|&[dx, dy]| {
                        // Quantised arcs are delta-encoded.
                        if quantised {
                            x += dx;
                            y += dy;
                        } else {
                            (x, y) = (dx, dy);
                        }
                        [
                            x as f64 * scale[0] + translate[0],
                            y as f64 * scale[1] + translate[1],
                        ]
                    })
                    .collect();
                simplify(&points, tolerance)
            })
            .collect();
        let collection = t
            .objects
            .get(object)
            .ok_or_else(|| MapError::NoObject(object.to_owned()))?;
        let mut shapes = HashMap::new();
        for g in &collection.geometries {
            let (polygons, code) = match g {
                topo::Geometry::Polygon { arcs, properties } => {
                    (vec![arcs.clone()], &properties.statcode)
                }
                topo::Geometry::MultiPolygon { arcs, properties } => {
                    (arcs.clone(), &properties.statcode)
                }
                topo::Geometry::Other => continue,
            };
            let mut bbox = [
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ];
            for &a in polygons.iter().flatten().flatten() {
                let i = if a < 0 { !a } else { a };
                let arc = usize::try_from(i)
                    .ok()
                    .and_then(|i| arcs.get(i))
                    .ok_or_else(|| MapError::BadArc {
                        code: code.clone(),
                        arc: a,
                    })?;
                for &[x, y] in arc {
                    bbox = [
                        bbox[0].min(x),
                        bbox[1].min(y),
                        bbox[2].max(x),
                        bbox[3].max(y),
                    ];
                }
            }
            shapes.insert(code.clone(), Shape { polygons, bbox });
        }
        Ok(Atlas { arcs, shapes })
    }

    /// The areas that share a border with `code`: an arc of the topology,
    /// sorted by code. Empty for an unknown code.
    pub fn neighbours(&self, code: &str) -> Vec<String> {
        let arcs_of = |shape: &Shape| -> std::collections::HashSet<i64> {
            shape
                .polygons
                .iter()
                .flatten()
                .flatten()
                .map(|&a| if a < 0 { !a } else { a })
                .collect()
        };
        let Some(own) = self.shapes.get(code).map(arcs_of) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .shapes
            .iter()
            .filter(|(c, shape)| *c != code && arcs_of(shape).iter().any(|a| own.contains(a)))
            .map(|(c, _)| c.clone())
            .collect();
        out.sort();
        out
    }

    /// The wijken of 2023, read and simplified once.
    pub fn wijken() -> &'static Atlas {
        static ATLAS: OnceLock<Atlas> = OnceLock::new();
        ATLAS.get_or_init(|| {
            Atlas::parse(
                include_bytes!("../../../data/cbs/wijk_topo.json"),
                "wijk_data",
                TOLERANCE_DEGREES,
            )
            .expect("the shipped wijk boundaries parse")
        })
    }

    /// The buurten of 2023, read and simplified once.
    pub fn buurten() -> &'static Atlas {
        static ATLAS: OnceLock<Atlas> = OnceLock::new();
        ATLAS.get_or_init(|| {
            Atlas::parse(
                include_bytes!("../../../data/cbs/buurt_topo.json"),
                "buurt2_geo",
                TOLERANCE_DEGREES,
            )
            .expect("the shipped buurt boundaries parse")
        })
    }

    /// How many areas have a boundary.
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    pub fn contains(&self, code: &str) -> bool {
        self.shapes.contains_key(code)
    }

    /// Draws `codes` into a box `width` wide (the height follows). Each
    /// path's coordinates have one decimal.
    pub fn draw<'c>(&self, codes: impl IntoIterator<Item = &'c str>, width: f64) -> Drawing {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for code in codes {
            match self.shapes.get(code) {
                Some(s) => found.push((code, s)),
                None => missing.push(code.to_owned()),
            }
        }
        let mut bbox = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (_, s) in &found {
            bbox = [
                bbox[0].min(s.bbox[0]),
                bbox[1].min(s.bbox[1]),
                bbox[2].max(s.bbox[2]),
                bbox[3].max(s.bbox[3]),
            ];
        }
        if found.is_empty() {
            return Drawing {
                width,
                height: 0.0,
                paths: Vec::new(),
                missing,
            };
        }
        // Equirectangular around the middle latitude.
        let squeeze = ((bbox[1] + bbox[3]) / 2.0).to_radians().cos();
        let span_x = ((bbox[2] - bbox[0]) * squeeze).max(1e-9);
        let span_y = (bbox[3] - bbox[1]).max(1e-9);
        let scale = width / span_x;
        let height = (span_y * scale).ceil();
        let project =
            |[lon, lat]: [f64; 2]| ((lon - bbox[0]) * squeeze * scale, (bbox[3] - lat) * scale);
        let paths = found
            .into_iter()
            .map(|(code, shape)| {
                let mut d = String::new();
                for ring in shape.polygons.iter().flatten() {
                    for (n, p) in self.ring(ring).into_iter().enumerate() {
                        let (x, y) = project(p);
                        let op = if n == 0 { 'M' } else { 'L' };
                        let _ = write!(d, "{op}{x:.1} {y:.1}");
                    }
                    d.push('Z');
                }
                (code.to_owned(), d)
            })
            .collect();
        Drawing {
            width,
            height,
            paths,
            missing,
        }
    }
}

impl Atlas {
    /// A ring's points, in order: its arcs joined (each starts where the
    /// last ended, so that point is not repeated).
    fn ring(&self, arcs: &[i64]) -> Vec<[f64; 2]> {
        let mut out: Vec<[f64; 2]> = Vec::new();
        for &a in arcs {
            let points: Box<dyn Iterator<Item = &[f64; 2]>> = if a < 0 {
                Box::new(self.arcs[!a as usize].iter().rev())
            } else {
                Box::new(self.arcs[a as usize].iter())
            };
            for (n, &p) in points.enumerate() {
                if n > 0 || out.is_empty() {
                    out.push(p);
                }
            }
        }
        out
    }

    /// An area's outline as a GeoJSON geometry (a MultiPolygon in WGS84
    /// longitude and latitude, 6 decimals, each ring closed), or `None`
    /// without a boundary.
    pub fn geojson_geometry(&self, code: &str) -> Option<serde_json::Value> {
        let shape = self.shapes.get(code)?;
        let round = |x: f64| (x * 1e6).round() / 1e6;
        let polygons: Vec<Vec<Vec<[f64; 2]>>> = shape
            .polygons
            .iter()
            .map(|rings| {
                rings
                    .iter()
                    .map(|ring| {
                        let mut points: Vec<[f64; 2]> = self
                            .ring(ring)
                            .into_iter()
                            .map(|[x, y]| [round(x), round(y)])
                            .collect();
                        if points.first() != points.last()
                            && let Some(&first) = points.first()
                        {
                            points.push(first);
                        }
                        points
                    })
                    .collect()
            })
            .collect();
        Some(serde_json::json!({ "type": "MultiPolygon", "coordinates": polygons }))
    }
}

/// Douglas–Peucker: the points of `line` that keep it within `tolerance`
/// (in degrees, longitude shrunk by the cosine of 52°); the ends are kept.
fn simplify(line: &[[f64; 2]], tolerance: f64) -> Vec<[f64; 2]> {
    if line.len() <= 2 {
        return line.to_vec();
    }
    let squeeze = 52f64.to_radians().cos();
    let mut keep = vec![false; line.len()];
    keep[0] = true;
    keep[line.len() - 1] = true;
    let mut stack = vec![(0, line.len() - 1)];
    while let Some((a, b)) = stack.pop() {
        let (ax, ay) = (line[a][0] * squeeze, line[a][1]);
        let (bx, by) = (line[b][0] * squeeze, line[b][1]);
        let (dx, dy) = (bx - ax, by - ay);
        let length = (dx * dx + dy * dy).sqrt();
        let mut worst = (0.0, a);
        for (i, p) in line.iter().enumerate().take(b).skip(a + 1) {
            let (px, py) = (p[0] * squeeze, p[1]);
            let distance = if length == 0.0 {
                ((px - ax).powi(2) + (py - ay).powi(2)).sqrt()
            } else {
                ((px - ax) * dy - (py - ay) * dx).abs() / length
            };
            if distance > worst.0 {
                worst = (distance, i);
            }
        }
        if worst.0 > tolerance {
            keep[worst.1] = true;
            stack.push((a, worst.1));
            stack.push((worst.1, b));
        }
    }
    line.iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(p, _)| *p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two squares side by side sharing one border (arc 1), quantised.
    const TWO: &str = r#"{"type":"Topology",
        "transform":{"scale":[0.001,0.001],"translate":[5.0,52.0]},
        "arcs":[
            [[1000,0],[-1000,0],[0,1000],[1000,0]],
            [[1000,1000],[0,-500],[0,-500]],
            [[1000,1000],[1000,0],[0,-1000],[-1000,0]]
        ],
        "objects":{"w":{"geometries":[
            {"type":"Polygon","arcs":[[0,1]],"properties":{"statcode":"WK000101"}},
            {"type":"Polygon","arcs":[[2,-2]],"properties":{"statcode":"WK000102"}},
            {"type":"Point","coordinates":[0,0]}
        ]}}}"#;

    #[test]
    fn neighbours_share_the_same_border_after_simplification() {
        let atlas = Atlas::parse(TWO.as_bytes(), "w", 0.01).unwrap();
        assert_eq!(atlas.len(), 2);
        // The shared border's middle point is on a straight line: dropped,
        // and the same way for both squares.
        assert_eq!(atlas.arcs[1], vec![[6.0, 53.0], [6.0, 52.0]]);
        let d = atlas.draw(["WK000101", "WK000102", "WK000199"], 200.0);
        assert_eq!(d.missing, vec!["WK000199".to_owned()]);
        assert_eq!(d.paths.len(), 2);
        // Both paths run through the same two points at x = 100, the
        // shared border's ends, and through no other point there.
        let on_border = |path: &str| -> Vec<String> {
            let mut points: Vec<String> = path
                .split(['M', 'L', 'Z'])
                .filter(|p| p.starts_with("100.0 "))
                .map(str::to_owned)
                .collect();
            points.sort();
            points.dedup();
            points
        };
        assert_eq!(on_border(&d.paths[0].1).len(), 2);
        assert_eq!(on_border(&d.paths[0].1), on_border(&d.paths[1].1));
        for (_, path) in &d.paths {
            assert!(path.starts_with('M') && path.ends_with('Z'));
        }
        // One degree of latitude is longer than one of longitude at 52.5°.
        assert!(d.height > 100.0 && d.height < 200.0, "{}", d.height);
        assert_eq!(atlas.neighbours("WK000101"), ["WK000102"]);
        assert!(atlas.neighbours("WK000199").is_empty());
    }

    #[test]
    fn simplification_keeps_the_ends_and_what_sticks_out() {
        let flat = [[0.0, 0.0], [1.0, 0.00001], [2.0, 0.0]];
        assert_eq!(simplify(&flat, 0.001), vec![[0.0, 0.0], [2.0, 0.0]]);
        let peak = [[0.0, 0.0], [1.0, 0.5], [2.0, 1.0], [3.0, 0.0]];
        assert_eq!(
            simplify(&peak, 0.001),
            vec![[0.0, 0.0], [2.0, 1.0], [3.0, 0.0]]
        );
    }

    #[test]
    fn the_shipped_boundaries_cover_almere() {
        let wijken = Atlas::wijken();
        assert!(wijken.len() > 3000);
        assert!(wijken.contains("WK003401"));
        assert!(Atlas::buurten().contains("BU00340101"));
        // Almere Haven borders other wijken of Almere, and not itself.
        let around = wijken.neighbours("WK003401");
        assert!(!around.is_empty() && around.len() < 10, "{around:?}");
        assert!(
            around
                .iter()
                .all(|c| c.starts_with("WK") && c != "WK003401")
        );
        let d = wijken.draw(["WK003401", "WK003402"], 800.0);
        assert!(d.missing.is_empty());
        assert!(d.height > 100.0);
    }

    #[test]
    fn geojson_rings_are_closed_and_in_wgs84() {
        let atlas = Atlas::parse(TWO.as_bytes(), "w", 0.01).unwrap();
        let g = atlas.geojson_geometry("WK000102").unwrap();
        assert_eq!(g["type"], "MultiPolygon");
        let ring = g["coordinates"][0][0].as_array().unwrap();
        assert_eq!(ring.first(), ring.last(), "closed");
        assert_eq!(ring.len(), 5, "{ring:?}");
        assert!(ring.iter().all(|p| {
            let lon = p[0].as_f64().unwrap();
            let lat = p[1].as_f64().unwrap();
            (6.0..=7.0).contains(&lon) && (52.0..=53.0).contains(&lat)
        }));
        assert!(atlas.geojson_geometry("WK000199").is_none());
    }

    #[test]
    fn a_bad_arc_is_an_error() {
        let bad = TWO.replace("[[2,-2]]", "[[2,-9]]");
        assert!(matches!(
            Atlas::parse(bad.as_bytes(), "w", 0.01),
            Err(MapError::BadArc { .. })
        ));
    }
}
