//! Humanized task names: four words derived from the task id, as Django Q's humanhash.

/// 256 words, one per byte value; a name is four of them.
const WORDS: [&str; 256] = [
    "alpha", "amber", "anchor", "angel", "apple", "april", "arctic", "arrow", "artist", "aspen",
    "atlas", "autumn", "avocado", "bacon", "badger", "balloon", "bamboo", "banana", "basket",
    "beach", "beaver", "berry", "bison", "blossom", "blue", "bravo", "bread", "breeze", "bridge",
    "bronze", "butter", "cactus", "camel", "candle", "canyon", "carbon", "carpet", "castle",
    "cedar", "cello", "charlie", "cherry", "chess", "cobalt", "cocoa", "comet", "copper", "coral",
    "cotton", "cougar", "crane", "crystal", "cypress", "daisy", "delta", "desert", "diamond",
    "dolphin", "dragon", "eagle", "echo", "eleven", "ember", "emerald", "falcon", "fennel", "fern",
    "fiddle", "finch", "fjord", "flamingo", "forest", "fossil", "fox", "garden", "garlic", "gecko",
    "ginger", "glacier", "golf", "granite", "grape", "gravel", "harbor", "hazel", "helium",
    "heron", "hickory", "honey", "hotel", "hydrogen", "iceberg", "igloo", "indigo", "india",
    "iris", "island", "ivory", "jade", "jaguar", "jasmine", "jelly", "juliet", "juniper",
    "jupiter", "kayak", "kettle", "kilo", "kiwi", "koala", "lagoon", "lantern", "lava", "lemon",
    "lilac", "lima", "lime", "lion", "lobster", "lotus", "lunar", "magnet", "mango", "maple",
    "marble", "meadow", "melon", "mercury", "meteor", "mike", "mint", "monkey", "moss", "nectar",
    "neon", "nickel", "noble", "november", "nutmeg", "oak", "oasis", "ocean", "olive", "onyx",
    "opal", "orange", "orbit", "orchid", "oscar", "otter", "oxygen", "panda", "papa", "paper",
    "pebble", "pepper", "piano", "pine", "planet", "plum", "polar", "poppy", "prairie", "quartz",
    "quebec", "quiet", "quill", "rabbit", "radio", "rain", "raven", "river", "robin", "rocket",
    "romeo", "ruby", "saffron", "salmon", "sapphire", "saturn", "sierra", "silver", "sparrow",
    "spring", "spruce", "squid", "stone", "storm", "sugar", "summer", "sunset", "tango", "tiger",
    "timber", "topaz", "tulip", "tundra", "turtle", "uniform", "urchin", "valley", "vanilla",
    "velvet", "venus", "victor", "violet", "volcano", "walnut", "walrus", "whiskey", "willow",
    "winter", "wolf", "xray", "yankee", "yellow", "yogurt", "zebra", "zenith", "zinc", "zulu",
    "acorn", "almond", "basil", "birch", "bramble", "canary", "clover", "cricket", "cumin", "dune",
    "elm", "fig", "flint", "frost", "galaxy", "harvest", "jasper", "kelp", "larch", "lichen",
    "lily", "lynx", "mist", "nova", "pearl", "pixel", "puffin", "reef", "sage", "shell", "sky",
    "snow", "thunder", "trout", "vapor",
];

/// Four words from the 16 bytes of a hex id: each word is the XOR of four bytes.
///
/// Ids that are not 32 hex digits are hashed byte by byte instead, so every
/// string gets a name.
pub fn humanize(id: &str) -> String {
    let bytes = id_bytes(id);
    let mut segments = [0u8; 4];
    for (index, byte) in bytes.iter().enumerate() {
        segments[index * 4 / bytes.len().max(1)] ^= byte;
    }
    segments
        .iter()
        .map(|segment| WORDS[usize::from(*segment)])
        .collect::<Vec<_>>()
        .join("-")
}

fn id_bytes(id: &str) -> Vec<u8> {
    let hex: Option<Vec<u8>> = (id.len() == 32)
        .then(|| {
            (0..16)
                .map(|i| u8::from_str_radix(id.get(i * 2..i * 2 + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    hex.unwrap_or_else(|| id.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_list_has_no_duplicates() {
        let mut sorted = WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn same_id_gives_same_four_word_name() {
        let id = "f1d2d2f924e986ac86fdf7b36c94bcdf";
        let name = humanize(id);
        assert_eq!(name, humanize(id));
        assert_eq!(name.split('-').count(), 4);
    }

    #[test]
    fn different_ids_usually_differ() {
        let a = humanize("00000000000000000000000000000001");
        let b = humanize("00000000000000000000000000000002");
        assert_ne!(a, b);
    }
}
