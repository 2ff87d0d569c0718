// ESLint for the page's modules, the service worker and these tests.
// Run from web/: tests/node_modules/.bin/eslint -c tests/eslint.config.js .
import js from '@eslint/js';
import globals from 'globals';

export default [
  { ignores: ['tests/node_modules/**', 'js/vendor/**'] },
  js.configs.recommended,
  {
    files: ['js/**/*.js'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'module', globals: { ...globals.browser } },
  },
  {
    files: ['sw.js'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'script', globals: { ...globals.serviceworker } },
  },
  {
    files: ['tests/**/*.js'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'module', globals: { ...globals.node, ...globals.browser } },
  },
  {
    rules: {
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-eval': 'error',
      'no-implied-eval': 'error',
      'no-new-func': 'error',
      'no-restricted-properties': ['error',
        { property: 'innerHTML', message: 'Build DOM nodes; agent text must never become markup.' },
        { property: 'outerHTML', message: 'Build DOM nodes.' },
        { property: 'insertAdjacentHTML', message: 'Build DOM nodes.' }],
    },
  },
];
